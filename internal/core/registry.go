package core

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/headroom/headroom/internal/policy"
)

// PolicyNames lists the accepted forms, for help and error text.
const PolicyNames = "headroom, headroom:<config.yaml>, npa, dvfs, thr-mmt-<t>, mthr-mmt-<t>, iqr-mmt-<s>, mad-mmt-<s>, lr-mmt-<s>, lrr-mmt-<s>, oracle"

// Forecasting is implemented by policies that read forecasts: the shell must supply
// this many steps at the decision interval, with bounds at this confidence.
type Forecasting interface {
	HorizonSteps(interval float64) int
	Confidence() float64
}

// ParsePolicy turns a policy name such as "lr-mmt-1.2" into a Policy.
func ParsePolicy(name string) (Policy, error) {
	switch name {
	case "npa":
		return &Static{PolicyName: name, NonPowerAware: true}, nil
	case "dvfs":
		return &Static{PolicyName: name}, nil
	case "oracle":
		// The headroom policy fed each VM's true future demand: the floor any
		// predictor is measured against.
		return NewHeadroom(name, policy.DefaultHeadroom())
	case "headroom":
		return NewHeadroom(name, policy.DefaultHeadroom())
	}
	if path, ok := strings.CutPrefix(name, "headroom:"); ok {
		cfg, err := policy.LoadHeadroom(path)
		if err != nil {
			return nil, fmt.Errorf("policy %q: %w", name, err)
		}
		return NewHeadroom(name, cfg)
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
	case "mthr":
		// THR on each of the four resources; MMT selection and PABFD placement
		// then check all four too (placement through the detector and Suitable).
		if p > 1 {
			return nil, fmt.Errorf("policy %q: threshold %g must be in (0, 1]", name, p)
		}
		d = policy.MultiThreshold{T: p}
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
