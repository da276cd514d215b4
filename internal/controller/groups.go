package controller

// Policy groups live. The policy file gives a group its own triggers
// (policy.HeadroomConfig.Groups); the controller config says which VMs belong
// to it, by name patterns:
//
//	groups:
//	  latency-critical: ["db-*", "pay-??"]
//
// Names, not libvirt metadata: an operator sees and edits them in one file,
// next to the rules that also name VMs, and needs no access to the domains'
// XML. Patterns are shell globs (path.Match).

import (
	"fmt"
	"maps"
	"os"
	"path"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/headroom/headroom/internal/core"
	"github.com/headroom/headroom/internal/model"
	"github.com/headroom/headroom/internal/store"
)

// validateGroups checks the groups section on its own: names and patterns.
func validateGroups(groups map[string][]string) error {
	for _, name := range slices.Sorted(maps.Keys(groups)) {
		if name == "" {
			return fmt.Errorf("groups: a group has an empty name")
		}
		if len(groups[name]) == 0 {
			return fmt.Errorf("groups.%s: no VM patterns given", name)
		}
		for i, p := range groups[name] {
			if _, err := path.Match(p, ""); err != nil || p == "" {
				return fmt.Errorf("groups.%s[%d]: %q is not a glob pattern (want e.g. \"db-*\")", name, i, p)
			}
		}
	}
	return nil
}

// groupMap assigns VMs to groups and remembers what it warned about.
type groupMap struct {
	groups map[string][]string

	mu     sync.Mutex
	cache  map[string]string // VM: its group ("" for none)
	warned map[string]bool
}

// newGroupMap checks that every configured group is one the policy defines:
// a group the policy does not know would match VMs and change nothing.
func newGroupMap(groups map[string][]string, pol core.Policy) (*groupMap, error) {
	if len(groups) == 0 {
		return nil, nil
	}
	h, ok := pol.(*core.Headroom)
	if !ok {
		return nil, fmt.Errorf("groups: policy %s has no groups; only the headroom policy reads them", pol.Name())
	}
	for _, name := range slices.Sorted(maps.Keys(groups)) {
		if _, ok := h.Cfg.Groups[name]; !ok {
			known := slices.Sorted(maps.Keys(h.Cfg.Groups))
			return nil, fmt.Errorf("groups.%s: the policy file defines no such group (it defines: %s)", name, strings.Join(known, ", "))
		}
	}
	return &groupMap{groups: groups, cache: map[string]string{}, warned: map[string]bool{}}, nil
}

// of is vm's group: "" when no pattern matches, and also when patterns of two
// groups match (then ambiguous names them, and the VM keeps the policy's own
// triggers: picking one silently would hide the mistake).
func (g *groupMap) of(vm string) (group string, ambiguous []string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if grp, ok := g.cache[vm]; ok {
		return grp, nil
	}
	var in []string
	for name, pats := range g.groups {
		for _, p := range pats {
			if ok, _ := path.Match(p, vm); ok {
				in = append(in, name)
				break
			}
		}
	}
	sort.Strings(in)
	switch len(in) {
	case 0:
		g.cache[vm] = ""
	case 1:
		g.cache[vm] = in[0]
		return in[0], nil
	default:
		g.cache[vm] = ""
		if g.warned[vm] {
			return "", nil
		}
		g.warned[vm] = true
		return "", in
	}
	return "", nil
}

// assignGroups sets every snapshot VM's group. A VM that matches two groups is
// reported once, as an error event and on stderr, and gets neither.
func (c *Controller) assignGroups(snap *model.Snapshot) {
	if c.groups == nil {
		return
	}
	for i := range snap.VMs {
		v := &snap.VMs[i]
		grp, two := c.groups.of(v.ID)
		v.Group = grp
		if len(two) > 0 {
			msg := fmt.Sprintf("groups: VM %s matches the patterns of groups %s; it is in none of them until the config says one",
				v.ID, strings.Join(two, " and "))
			c.record(store.Event{Kind: store.Failure, VM: v.ID, Message: msg})
			fmt.Fprintln(os.Stderr, "headroom: error:", msg)
		}
	}
}
