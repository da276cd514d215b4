// Package core is headroom's pure decision core: Decide turns a snapshot, forecasts,
// a policy and the migrations in flight into a plan. It does no I/O, keeps no clock
// and starts no goroutines; the simulator and the live controller both drive it.
package core

import (
	"github.com/headroom/headroom/internal/cluster"
	"github.com/headroom/headroom/internal/model"
)

// Input is everything a policy may look at.
type Input struct {
	Snapshot *model.Snapshot
	// Forecasts is indexed like Snapshot.VMs; policies that need none accept nil.
	Forecasts []model.ResourceForecast
	InFlight  []model.MigrationRequest
}

// Unplaced records a VM that needed a host and found none.
type Unplaced struct {
	VM     int    `json:"vm"`
	Reason string `json:"reason"`
}

// NoSuitableHost is the message logged when a VM that must move has nowhere to go.
const NoSuitableHost = "no suitable host available"

// Plan is a policy's answer for one cycle.
type Plan struct {
	Moves      []model.MigrationRequest `json:"moves"`
	Overloaded []int                    `json:"overloaded_hosts,omitempty"`
	Unplaced   []Unplaced               `json:"unplaced,omitempty"`
}

// Policy is a named decision rule.
type Policy interface {
	Name() string
	// Plan decides one cycle.
	Plan(in Input) Plan
	// Place picks a host for v in the what-if state st (initial placement), or -1.
	Place(st *cluster.State, v int) int
}

// Decide runs one decision cycle. It reads its arguments and changes none of them.
func Decide(snap *model.Snapshot, forecasts []model.ResourceForecast, pol Policy, inFlight []model.MigrationRequest) Plan {
	return pol.Plan(Input{Snapshot: snap, Forecasts: forecasts, InFlight: inFlight})
}

// PlaceAll places, in VM order, every VM of snap that has no host, as pol would, and
// returns the host of every VM (-1 where none fits). Each placed VM counts for the next.
func PlaceAll(snap *model.Snapshot, pol Policy) []int {
	st := cluster.New(snap, nil)
	out := make([]int, len(snap.VMs))
	for v := range snap.VMs {
		out[v] = snap.VMs[v].Host
		if out[v] >= 0 {
			continue
		}
		if h := pol.Place(st, v); h >= 0 {
			st.Add(v, h)
			out[v] = h
		}
	}
	return out
}
