package core

import (
	"math/rand/v2"
	"testing"
)

// memPeaks.blocks reads v's need now and excess once per VM and the host's
// step-0 sum from its cached moments; it must answer as the plain expression
// (blocksPlain) on every host, for every VM, as VMs move, and rule (the
// selection's ExcludeAlso) must exclude the hosts exclude's mask adds.
func TestMemPeaksBlocksAsThePlainExpression(t *testing.T) {
	s, fc := bigCluster(60, 600)
	rng := rand.New(rand.NewPCG(4, 4))
	for v := range fc {
		if rng.IntN(2) == 0 {
			fc[v].Peak.Mem = s.VMs[v].Demand.Mem * (1 + 3*rng.Float64())
		}
	}
	p, err := ParsePolicy("headroom")
	if err != nil {
		t.Fatal(err)
	}
	c := p.(*Headroom).newCycle(Input{Snapshot: s, Forecasts: fc}, false)
	m := c.mp
	if m.excess == nil {
		t.Fatal("memory_peaks_together is off by default: the test checks nothing")
	}
	// blocksIn must answer as blocks both through a Context whose selections
	// keep compact records of the hosts (ctx) and through one without (bare).
	ctx, bare := p.(*Headroom).context(c.st, c.zC), p.(*Headroom).context(c.st, c.zC)
	blocked, passed := 0, 0
	excl := make([]bool, len(s.Hosts))
	for range 400 {
		for h := range excl {
			excl[h] = rng.IntN(4) == 0
		}
		v := rng.IntN(len(s.VMs))
		mask := m.exclude(v, excl)
		if rng.IntN(2) == 0 {
			c.p.chain.Select(ctx, v, excl, false) // brings ctx's records up to date, or not
		}
		for h := range s.Hosts {
			got, want := m.blocks(v, h), m.blocksPlain(v, h)
			if got != want {
				t.Fatalf("vm %d host %d: blocks %v, plain %v", v, h, got, want)
			}
			if a, b := m.blocksIn(ctx, v, h), m.blocksIn(bare, v, h); a != want || b != want {
				t.Fatalf("vm %d host %d: blocksIn %v (records), %v (State), plain %v", v, h, a, b, want)
			}
			if mask[h] != (excl[h] || (!excl[h] && m.rule()(v, h))) {
				t.Fatalf("vm %d host %d: mask %v, rule %v", v, h, mask[h], m.rule()(v, h))
			}
			if got {
				blocked++
			} else {
				passed++
			}
		}
		// Move v somewhere, as the phases do, so sums and caches change.
		h, tg := c.st.HostOf(v), rng.IntN(len(s.Hosts))
		if h >= 0 && tg != h {
			c.st.Remove(v, h)
			c.st.Add(v, tg)
			m.move(v, h, tg)
		}
	}
	if blocked == 0 || passed == 0 {
		t.Fatalf("%d blocked, %d passed: the test checks nothing", blocked, passed)
	}
}
