package controller

// SourceConfig says where the controller reads stats from (issue 15 fills it in).
// The driver that migrates is always libvirt.
type SourceConfig struct{}

func (s *SourceConfig) validate() error { return nil }
