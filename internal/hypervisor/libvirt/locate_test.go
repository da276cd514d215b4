package libvirt

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/digitalocean/go-libvirt/libvirttest"

	"github.com/headroom/headroom/internal/hypervisor"
)

// TestLocateAnswersFromReachableHosts: host a runs the VM (a fake libvirtd that
// finds every domain running), host b refuses connections. The answer is a, with b
// reported as not asked, and no error: b being down says nothing about a VM that
// runs elsewhere.
func TestLocateAnswersFromReachableHosts(t *testing.T) {
	mock := libvirttest.New()
	d, err := New(Config{
		Hosts: []HostConfig{{ID: "a", URI: "qemu+tcp://a/system"}, {ID: "b", URI: "qemu+tcp://b/system"}},
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if addr == "a:16509" {
				return mock.Dial()
			}
			return nil, fmt.Errorf("dial %s %s: connection refused", network, addr)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	loc, err := d.Locate(context.Background(), "test")
	if err != nil || loc.Host != "a" || !slices.Equal(loc.Unreachable, []string{"b"}) || loc.States["a"] != hypervisor.StateRunning {
		t.Fatalf("locate with b down: %+v, %v; want on a, b not asked, no error", loc, err)
	}
}

// TestLocateFrom covers the answers Locate gives from the hosts' replies.
func TestLocateFrom(t *testing.T) {
	const (
		run    = hypervisor.StateRunning
		paused = hypervisor.StatePaused
		off    = hypervisor.StateShutoff
		none   = hypervisor.StateNotFound
	)
	down := &hypervisor.HostError{Host: "c", URI: "qemu+tcp://c/system", Op: "locate", Err: hypervisor.ErrUnreachable}
	ids := []string{"a", "b", "c"}
	for _, tc := range []struct {
		name   string
		states []hypervisor.VMState
		errs   []error
		host   string
		is     error // nil: no error
	}{
		{"running on one", []hypervisor.VMState{run, off, none}, nil, "a", nil},
		{"running, another host down", []hypervisor.VMState{none, run, none}, []error{nil, nil, down}, "b", nil},
		{"migrating: running and paused", []hypervisor.VMState{run, paused, none}, []error{nil, nil, down}, "a", nil},
		{"paused on one", []hypervisor.VMState{paused, none, none}, nil, "a", nil},
		{"paused on one, another host down", []hypervisor.VMState{paused, none, none}, []error{nil, nil, down}, "", hypervisor.ErrLocationUnknown},
		{"nowhere, a host down", []hypervisor.VMState{none, off, none}, []error{nil, nil, down}, "", hypervisor.ErrLocationUnknown},
		{"nowhere", []hypervisor.VMState{none, none, none}, nil, "", hypervisor.ErrVMNotFound},
		{"defined, not running", []hypervisor.VMState{off, none, none}, nil, "", nil},
		{"split brain", []hypervisor.VMState{run, run, none}, []error{nil, nil, down}, "", hypervisor.ErrSplitBrain},
	} {
		errs := tc.errs
		if errs == nil {
			errs = make([]error, len(ids))
		}
		loc, err := locateFrom("vm", ids, tc.states, errs)
		if loc.Host != tc.host || (tc.is == nil) != (err == nil) || (tc.is != nil && !errors.Is(err, tc.is)) {
			t.Errorf("%s: %+v, %v; want host %q, error %v", tc.name, loc, err, tc.host, tc.is)
			continue
		}
		if errs[2] != nil {
			if !slices.Equal(loc.Unreachable, []string{"c"}) {
				t.Errorf("%s: unreachable %v, want [c]", tc.name, loc.Unreachable)
			}
			if err != nil && !errors.Is(tc.is, hypervisor.ErrSplitBrain) && (!errors.Is(err, hypervisor.ErrUnreachable) || !strings.Contains(err.Error(), "vm") || !strings.Contains(err.Error(), "c")) {
				t.Errorf("%s: error %q should name the VM and the host not asked, and wrap its reason", tc.name, err)
			}
		}
	}
}
