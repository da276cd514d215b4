package core

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/headroom/headroom/internal/policy"
)

// PolicyNames lists the accepted forms, for help and error text.
const PolicyNames = "npa, dvfs, thr-mmt-<t>, iqr-mmt-<s>, mad-mmt-<s>, lr-mmt-<s>, lrr-mmt-<s>, oracle"

// ParsePolicy turns a policy name such as "lr-mmt-1.2" into a Policy.
func ParsePolicy(name string) (Policy, error) {
	switch name {
	case "npa":
		return &Static{PolicyName: name, NonPowerAware: true}, nil
	case "dvfs":
		return &Static{PolicyName: name}, nil
	case "oracle":
		return &Consolidation{PolicyName: name, Detector: policy.Oracle{}}, nil
	}
	parts := strings.Split(name, "-")
	if len(parts) != 3 || parts[1] != "mmt" {
		return nil, fmt.Errorf("unknown policy %q (known: %s)", name, PolicyNames)
	}
	p, err := strconv.ParseFloat(parts[2], 64)
	if err != nil || p <= 0 {
		return nil, fmt.Errorf("policy %q: parameter %q must be a positive number", name, parts[2])
	}
	var d policy.Detector
	switch parts[0] {
	case "thr":
		if p > 1 {
			return nil, fmt.Errorf("policy %q: threshold %g must be in (0, 1]", name, p)
		}
		d = policy.Threshold{T: p}
	case "iqr":
		d = policy.IQR{S: p}
	case "mad":
		d = policy.MAD{S: p}
	case "lr":
		d = policy.LR{S: p}
	case "lrr":
		d = policy.LR{S: p, Robust: true}
	default:
		return nil, fmt.Errorf("unknown policy %q (known: %s)", name, PolicyNames)
	}
	return &Consolidation{PolicyName: name, Detector: d}, nil
}
