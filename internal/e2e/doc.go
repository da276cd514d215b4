// Package e2e holds headroom's end-to-end tests: the live controller driving real
// libvirtd hosts and real guests in the lab (internal/lab). It has no code of its
// own; see its tests and the README.
package e2e
