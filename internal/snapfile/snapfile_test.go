package snapfile

import (
	"os"
	"strings"
	"testing"
)

func TestParseExample(t *testing.T) {
	b, err := os.ReadFile("../../examples/snapshot.json")
	if err != nil {
		t.Fatal(err)
	}
	s, fc, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Hosts) != 4 || len(s.VMs) != 8 || fc == nil || len(s.Rules) == 0 {
		t.Fatalf("example parsed to %d hosts, %d VMs, forecasts %v, %d rules", len(s.Hosts), len(s.VMs), fc != nil, len(s.Rules))
	}
	if s.Hosts[0].Util <= 0 {
		t.Error("host utilisation not derived from demand")
	}
	var mem bool
	for i := range fc {
		if len(fc[i].PredictedMemory) > 0 && fc[i].Upper[0].Mem >= fc[i].PredictedMemory[0] {
			mem = true
		}
	}
	if !mem {
		t.Error("the example has no memory forecast")
	}
}

func TestParseErrorsNameTheField(t *testing.T) {
	cases := map[string]string{
		`{"hosts":[]}`: "hosts: none given",
		`{"hosts":[{"id":"a","capacity":{"cpu":0}}]}`:                                                                                                                     "hosts[0].capacity",
		`{"hosts":[{"id":"a","capacity":{"cpu":1}}],"vms":[{"id":"v","host":"b"}]}`:                                                                                       `vms[0].host: "b" is not a host`,
		`{"hosts":[{"id":"a","capacity":{"cpu":1}},{"id":"a","capacity":{"cpu":1}}]}`:                                                                                     `hosts[1].id: "a" given twice`,
		`{"hosts":[{"id":"a","capacity":{"cpu":1},"power":[1,2]}]}`:                                                                                                       "hosts[0].power: 2 values",
		`{"hosts":[{"id":"a","capacity":{"cpu":1}}],"vms":[{"id":"v","host":"a","forecast":{"cpu":[1],"cpu_upper":[0.5],"confidence":0.9}}]}`:                             "vms[0].forecast: step 1",
		`{"hosts":[{"id":"a","capacity":{"cpu":1}}],"vms":[{"id":"v","host":"a","forecast":{"cpu":[1],"cpu_upper":[2],"confidence":1}}]}`:                                 "vms[0].forecast.confidence",
		`{"hosts":[{"id":"a","capacity":{"cpu":1}}],"vms":[{"id":"v","host":"a","migration_seconds":-1}]}`:                                                                "vms[0].migration_seconds",
		`{"hosts":[{"id":"a","capacity":{"cpu":1}}],"bogus":1}`:                                                                                                           "unknown field",
		`{"hosts":[{"id":"a","capacity":{"cpu":1}}],"vms":[{"id":"v","host":"a","forecast":{"cpu":[1],"cpu_upper":[2],"mem":[1,2],"mem_upper":[2,3],"confidence":0.9}}]}`: "vms[0].forecast: mem has 2 steps",
		`{"hosts":[{"id":"a","capacity":{"cpu":1}}],"vms":[{"id":"v","host":"a","forecast":{"cpu":[1],"cpu_upper":[2],"net":[5],"net_upper":[4],"confidence":0.9}}]}`:     "vms[0].forecast: net step 1",
	}
	for in, want := range cases {
		_, _, err := Parse([]byte(in))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%s) = %v, want an error containing %q", in, err, want)
		}
	}
}

func FuzzParse(f *testing.F) {
	if b, err := os.ReadFile("../../examples/snapshot.json"); err == nil {
		f.Add(b)
	}
	f.Add([]byte(`{"hosts":[{"id":"a","capacity":{"cpu":1}}],"vms":[{"id":"v","host":"a","migrating_to":["a"]}]}`))
	f.Add([]byte(`{"hosts":[{"id":"a","capacity":{"cpu":1,"mem":4}}],"vms":[{"id":"v","host":"a","forecast":{"cpu":[1],"cpu_upper":[2],"mem":[3],"mem_upper":[4],"disk":[1],"disk_upper":[1],"confidence":0.9}}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, fc, err := Parse(b)
		if err != nil {
			return
		}
		for i, v := range s.VMs {
			if v.Host < 0 || v.Host >= len(s.Hosts) {
				t.Fatalf("vm %d on host %d of %d", i, v.Host, len(s.Hosts))
			}
		}
		if fc != nil && len(fc) != len(s.VMs) {
			t.Fatalf("%d forecasts for %d VMs", len(fc), len(s.VMs))
		}
		for i := range fc {
			f := &fc[i]
			for _, p := range [][]float64{f.PredictedMemory, f.PredictedNetworkIO, f.PredictedDiskIO} {
				if p != nil && len(p) != len(f.PredictedCPU) {
					t.Fatalf("vm %d: %d steps of a resource against %d of CPU", i, len(p), len(f.PredictedCPU))
				}
			}
		}
	})
}
