// Package rules reads, generates and checks VM-VM and VM-host placement rules.
package rules

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/headroom/headroom/internal/model"
)

// File is the YAML form: a list of rules.
type File struct {
	Rules []model.Rule `yaml:"rules"`
}

// Load reads a rules file and checks every rule.
func Load(path string) ([]model.Rule, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(b, path)
}

// Parse reads rules from YAML; name labels errors.
func Parse(b []byte, name string) ([]model.Rule, error) {
	var f File
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if err := Check(f.Rules, nil); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return f.Rules, nil
}

// Check validates rules as Parse does and, when hosts is not nil, that every
// host a rule names is one of them. The error names the first bad rule.
func Check(rs []model.Rule, hosts []string) error {
	for i, r := range rs {
		if err := validate(r); err != nil {
			return fmt.Errorf("rules[%d] (%s): %w", i, r.Name, err)
		}
		if hosts == nil {
			continue
		}
		for _, h := range r.Hosts {
			if !slices.Contains(hosts, h) {
				return fmt.Errorf("rules[%d] (%s): host %q is not configured (hosts: %s)", i, r.Name, h, strings.Join(hosts, ", "))
			}
		}
	}
	return nil
}

// Absent says, for each rule that names VMs not in vms, which: a rule about a
// VM that does not run yet binds when it appears, which an operator should
// know, since a misspelt name never will.
func Absent(rs []model.Rule, vms []string) []string {
	have := make(map[string]bool, len(vms))
	for _, v := range vms {
		have[v] = true
	}
	var out []string
	for _, r := range rs {
		var missing []string
		for _, v := range r.VMs {
			if !have[v] {
				missing = append(missing, v)
			}
		}
		if len(missing) > 0 {
			must := "should"
			if r.Must {
				must = "must"
			}
			out = append(out, fmt.Sprintf("%s rule %s names %s, which no host runs; it binds when they appear", must, r.Name, strings.Join(missing, ", ")))
		}
	}
	return out
}

func validate(r model.Rule) error {
	switch r.Kind {
	case model.Affinity, model.AntiAffinity:
		if len(r.VMs) < 2 {
			return fmt.Errorf("kind %s needs at least 2 vms, has %d", r.Kind, len(r.VMs))
		}
	case model.HostAffinity, model.HostAntiAffinity:
		if len(r.VMs) == 0 || len(r.Hosts) == 0 {
			return fmt.Errorf("kind %s needs vms and hosts", r.Kind)
		}
	default:
		return fmt.Errorf("kind %q is not one of affinity, anti-affinity, host-affinity, host-anti-affinity", r.Kind)
	}
	return nil
}

// Spec is what Generate needs besides the names: see ParseSpec.
type Spec struct {
	Anti, Host float64 // shares of the VMs, in [0, 1]
	Seed       uint64
}

// ParseSpec reads "anti=0.1,host=0.05,seed=1"; missing keys are 0, 0 and 1.
func ParseSpec(spec string) (Spec, error) {
	sp := Spec{Seed: 1}
	for _, kv := range strings.Split(spec, ",") {
		if kv = strings.TrimSpace(kv); kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		var err error
		switch {
		case !ok:
			err = fmt.Errorf("%q is not key=value", kv)
		case k == "anti", k == "host":
			var x float64
			x, err = strconv.ParseFloat(v, 64)
			if err != nil || !(x >= 0 && x <= 1) {
				err = fmt.Errorf("%s=%s: a share must be in [0, 1]", k, v)
			}
			if k == "anti" {
				sp.Anti = x
			} else {
				sp.Host = x
			}
		case k == "seed":
			if sp.Seed, err = strconv.ParseUint(v, 10, 64); err != nil {
				err = fmt.Errorf("seed=%s: want a whole number", v)
			}
		default:
			err = fmt.Errorf("unknown key %q (anti, host, seed)", k)
		}
		if err != nil {
			return Spec{}, err
		}
	}
	return sp, nil
}

// Generate makes must rules for an experiment: anti-affinity pairs covering antiShare
// of the VMs, and host-affinity rules for hostShare of the VMs, each to a random half
// of the hosts. The same seed gives the same rules.
func Generate(vms, hosts []string, antiShare, hostShare float64, seed uint64) []model.Rule {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	perm := r.Perm(len(vms))
	var out []model.Rule
	nAnti := int(antiShare*float64(len(vms))) / 2 * 2
	for i := 0; i+1 < nAnti; i += 2 {
		out = append(out, model.Rule{Name: fmt.Sprintf("apart-%d", i/2), Kind: model.AntiAffinity, Must: true,
			VMs: []string{vms[perm[i]], vms[perm[i+1]]}})
	}
	nHost := int(hostShare * float64(len(vms)))
	for i := 0; i < nHost && nAnti+i < len(perm); i++ {
		hp := r.Perm(len(hosts))[:len(hosts)/2]
		slices.Sort(hp)
		hs := make([]string, len(hp))
		for j, h := range hp {
			hs[j] = hosts[h]
		}
		out = append(out, model.Rule{Name: fmt.Sprintf("pin-%d", i), Kind: model.HostAffinity, Must: true,
			VMs: []string{vms[perm[nAnti+i]]}, Hosts: hs})
	}
	return out
}

// Violations lists every must rule the snapshot breaks. A migrating VM counts on its
// source and on every target, so a move cannot break a rule even half-way.
func Violations(s *model.Snapshot) []string {
	if len(s.Rules) == 0 {
		return nil
	}
	vmIx := make(map[string]int, len(s.VMs))
	for i := range s.VMs {
		vmIx[s.VMs[i].ID] = i
	}
	hostIx := make(map[string]int, len(s.Hosts))
	for i := range s.Hosts {
		hostIx[s.Hosts[i].ID] = i
	}
	where := func(v int) []int {
		vm := &s.VMs[v]
		if vm.Host < 0 {
			return nil
		}
		return append([]int{vm.Host}, vm.MigratingTo...)
	}
	var out []string
	for _, r := range s.Rules {
		if !r.Must {
			continue
		}
		switch r.Kind {
		case model.AntiAffinity:
			seen := map[int]string{}
			for _, id := range r.VMs {
				v, ok := vmIx[id]
				if !ok {
					continue
				}
				for _, h := range where(v) {
					if other, dup := seen[h]; dup {
						out = append(out, fmt.Sprintf("%s: %s and %s both on %s", r.Name, other, id, s.Hosts[h].ID))
					}
					seen[h] = id
				}
			}
		case model.HostAffinity, model.HostAntiAffinity:
			allowed := make(map[int]bool, len(r.Hosts))
			for _, id := range r.Hosts {
				if h, ok := hostIx[id]; ok {
					allowed[h] = true
				}
			}
			for _, id := range r.VMs {
				v, ok := vmIx[id]
				if !ok {
					continue
				}
				for _, h := range where(v) {
					if allowed[h] != (r.Kind == model.HostAffinity) {
						out = append(out, fmt.Sprintf("%s: %s on %s", r.Name, id, s.Hosts[h].ID))
					}
				}
			}
		case model.Affinity:
			host := -1
			for _, id := range r.VMs {
				v, ok := vmIx[id]
				if !ok || s.VMs[v].Host < 0 || s.VMs[v].Migrating() {
					continue
				}
				if host >= 0 && s.VMs[v].Host != host {
					out = append(out, fmt.Sprintf("%s: %s apart from the others", r.Name, id))
				}
				host = s.VMs[v].Host
			}
		}
	}
	return out
}
