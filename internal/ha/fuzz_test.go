package ha

import "testing"

func FuzzParseKey(f *testing.F) {
	for _, k := range []string{"/headroom/inflight/v1", "/headroom/leader/694d", "/headroom/pending/a%2Fb", "/headroom/x", "/other/cooldown/v"} {
		f.Add("/headroom", k)
	}
	f.Fuzz(func(t *testing.T, prefix, key string) {
		kind, vm, ok := ParseKey(prefix, key)
		if !ok {
			return
		}
		if vm == "" || kind == "" {
			t.Errorf("key %q parsed to an empty kind or vm", key)
		}
		// What parses names a key that parses back to the same kind and VM.
		k2, vm2, ok2 := ParseKey(prefix, (&State{prefix: prefix}).key(kind, vm))
		if !ok2 || k2 != kind || vm2 != vm {
			t.Errorf("key %q parsed to (%q, %q); its own key parses to (%q, %q, %v)", key, kind, vm, k2, vm2, ok2)
		}
	})
}

func FuzzDecodeRecord(f *testing.F) {
	f.Add([]byte(`{"vm":"v1","target":"b","leader":"n1","leader_rev":7,"started":"2026-01-01T00:00:00Z"}`))
	f.Add([]byte(`{"vm":"","target":"b"}`))
	f.Add([]byte(`[`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeRecord(b)
		if err == nil && (r.VM == "" || r.Target == "") {
			t.Errorf("accepted a record without vm or target: %+v", r)
		}
	})
}
