package rules

import (
	"strings"
	"testing"

	"github.com/headroom/headroom/internal/model"
)

func TestParseAndValidate(t *testing.T) {
	rs, err := Parse([]byte("rules:\n- {name: a, kind: anti-affinity, must: true, vms: [x, y]}\n- {name: b, kind: host-affinity, must: true, vms: [x], hosts: [h1]}\n"), "r.yaml")
	if err != nil || len(rs) != 2 || rs[1].Hosts[0] != "h1" {
		t.Fatalf("Parse = %+v, %v", rs, err)
	}
	for in, want := range map[string]string{
		"rules:\n- {name: a, kind: anti-affinity, vms: [x]}\n": "rules[0] (a): kind anti-affinity needs at least 2 vms",
		"rules:\n- {name: a, kind: near, vms: [x, y]}\n":       `kind "near" is not one of`,
		"rules:\n- {name: a, kind: host-affinity, vms: [x]}\n": "needs vms and hosts",
		"rulez: []\n": "field rulez not found",
	} {
		if _, err := Parse([]byte(in), "r.yaml"); err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "r.yaml") {
			t.Errorf("Parse(%q) = %v, want an error naming r.yaml and %q", in, err, want)
		}
	}
}

func TestGenerateIsSeededAndSized(t *testing.T) {
	vms := make([]string, 100)
	for i := range vms {
		vms[i] = string(rune('A'+i/26)) + string(rune('a'+i%26))
	}
	hosts := []string{"h0", "h1", "h2", "h3"}
	a := Generate(vms, hosts, 0.1, 0.05, 7)
	b := Generate(vms, hosts, 0.1, 0.05, 7)
	if len(a) != 10 || strings.Join(a[0].VMs, ",") != strings.Join(b[0].VMs, ",") {
		t.Fatalf("got %d rules (want 5 pairs + 5 pins), same seed same rules: %v vs %v", len(a), a[0].VMs, b[0].VMs)
	}
	seen := map[string]bool{}
	for _, r := range a {
		for _, v := range r.VMs {
			if seen[v] {
				t.Errorf("VM %s is in two rules", v)
			}
			seen[v] = true
		}
		if r.Kind == model.HostAffinity && len(r.Hosts) != 2 {
			t.Errorf("pin %s to %d hosts, want half of 4", r.Name, len(r.Hosts))
		}
	}
}

func TestViolations(t *testing.T) {
	s := &model.Snapshot{
		Hosts: []model.Host{{ID: "h0"}, {ID: "h1"}},
		VMs:   []model.VM{{ID: "x", Host: 0}, {ID: "y", Host: 1, MigratingTo: []int{0}}},
		Rules: []model.Rule{
			{Name: "apart", Kind: model.AntiAffinity, Must: true, VMs: []string{"x", "y"}},
			{Name: "pin", Kind: model.HostAffinity, Must: true, VMs: []string{"x"}, Hosts: []string{"h1"}},
			{Name: "soft", Kind: model.AntiAffinity, Must: false, VMs: []string{"x", "y"}},
		},
	}
	v := Violations(s)
	if len(v) != 2 || !strings.HasPrefix(v[0], "apart:") || !strings.HasPrefix(v[1], "pin:") {
		t.Errorf("violations %v: want the migrating y meeting x on h0, and x off its pinned host; should rules never count", v)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("rules:\n- {name: a, kind: anti-affinity, must: true, vms: [x, y]}\n"))
	f.Add([]byte("rules: [{kind: host-anti-affinity, vms: [a], hosts: [b]}]"))
	f.Fuzz(func(t *testing.T, b []byte) {
		rs, err := Parse(b, "f")
		if err != nil {
			return
		}
		for _, r := range rs {
			if validate(r) != nil {
				t.Fatalf("accepted an invalid rule %+v", r)
			}
		}
	})
}

func TestParseSpec(t *testing.T) {
	sp, err := ParseSpec(" anti=0.1, host = 0.05 ,seed=7")
	if err != nil || sp != (Spec{Anti: 0.1, Host: 0.05, Seed: 7}) {
		t.Fatalf("got %+v, %v", sp, err)
	}
	if sp, err := ParseSpec(""); err != nil || sp != (Spec{Seed: 1}) {
		t.Fatalf("empty spec: %+v, %v", sp, err)
	}
	for _, bad := range []string{"anti=NaN", "host=-0.1", "anti=1.5", "seed=-1", "anti", "x=1", "host=Inf"} {
		if _, err := ParseSpec(bad); err == nil {
			t.Errorf("%q accepted", bad)
		} else if k, _, _ := strings.Cut(bad, "="); !strings.Contains(err.Error(), k) {
			t.Errorf("%q: error %q does not name %q", bad, err, k)
		}
	}
}

func FuzzParseSpec(f *testing.F) {
	for _, s := range []string{"anti=0.1,host=0.05,seed=1", "seed=3", "", "anti=NaN", "host=1e309"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sp, err := ParseSpec(s)
		if err != nil {
			return
		}
		if !(sp.Anti >= 0 && sp.Anti <= 1 && sp.Host >= 0 && sp.Host <= 1) {
			t.Fatalf("%q gave %+v", s, sp)
		}
		rs := Generate([]string{"a", "b", "c", "d"}, []string{"h0", "h1"}, sp.Anti, sp.Host, sp.Seed)
		if len(rs) > 4 {
			t.Fatalf("%q: %d rules for 4 VMs", s, len(rs))
		}
	})
}

func TestCheckAndAbsent(t *testing.T) {
	rs := []model.Rule{
		{Name: "apart", Kind: model.AntiAffinity, Must: true, VMs: []string{"db-1", "db-2"}},
		{Name: "pin", Kind: model.HostAffinity, Must: true, VMs: []string{"db-1"}, Hosts: []string{"h1"}},
	}
	if err := Check(rs, []string{"h1", "h2"}); err != nil {
		t.Fatal(err)
	}
	if err := Check(rs, []string{"h2"}); err == nil || !strings.Contains(err.Error(), `rules[1] (pin): host "h1" is not configured`) {
		t.Errorf("unknown host: %v", err)
	}
	if err := Check(rs, nil); err != nil {
		t.Errorf("no hosts to check against: %v", err)
	}
	got := Absent(rs, []string{"db-1", "web"})
	if len(got) != 1 || !strings.Contains(got[0], "apart") || !strings.Contains(got[0], "db-2") {
		t.Errorf("absent %q: want rule apart naming db-2", got)
	}
}
