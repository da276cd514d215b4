// Package transferlab holds the lab acceptance tests of the transfer model and
// "headroom migrate": real QEMU guests under libvirt, in the hosts
// internal/lab makes. Its tests skip, saying why, on a machine that cannot run a
// lab, unless HEADROOM_LAB_REQUIRED=1.
package transferlab
