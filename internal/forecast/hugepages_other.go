//go:build !linux

package forecast

func adviseHuge([]byte) {}
