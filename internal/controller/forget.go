package controller

// Forgetting departed VMs. The forecast engines keep a VM's history until told
// otherwise; in a fleet with churn a long-running controller would grow without
// bound. A VM absent from every listing for forget_after is removed from both
// engines (and so from the persisted snapshot) and from the per-VM maps. While
// the host it was last seen on does not answer, it is not counted as absent: a
// host outage must not wipe a week of history.

import (
	"fmt"
	"time"

	"github.com/headroom/headroom/internal/store"
)

// VMForgotten is the event kind of a VM forgotten after forget_after absent.
const VMForgotten = "vm-forgotten"

// lastSeen is where and when a VM was last listed.
type lastSeen struct {
	at   time.Time
	host string
}

// forget updates when each VM was last listed (r: this cycle's reading) and
// forgets those absent for ForgetAfter.
func (c *Controller) forget(r reading) {
	now := c.now()
	listed := make(map[string]bool, len(r.vms))
	c.mu.Lock()
	if c.seen == nil {
		c.seen = map[string]lastSeen{}
	}
	for _, v := range r.vms {
		listed[v.ID] = true
		c.seen[v.ID] = lastSeen{at: now, host: v.Host}
	}
	var gone []string
	for id, s := range c.seen {
		if listed[id] {
			continue
		}
		if _, down := r.down[s.host]; down {
			// Its host is silent: it may well still run there.
			c.seen[id] = lastSeen{at: now, host: s.host}
			continue
		}
		if _, moving := c.inflight[id]; moving {
			continue
		}
		if now.Sub(s.at) >= c.cfg.ForgetAfter {
			gone = append(gone, id)
		}
	}
	for _, id := range gone {
		delete(c.seen, id)
		delete(c.failures, id)
		delete(c.lastMove, id)
		delete(c.lastRates, id)
	}
	c.mu.Unlock()
	for _, id := range gone {
		c.eng.Remove(id)
		c.dirty.Remove(id)
		c.record(store.Event{Kind: VMForgotten, VM: id,
			Message: fmt.Sprintf("absent from every listing for forget_after (%v); its forecast history is dropped", c.cfg.ForgetAfter)})
	}
}
