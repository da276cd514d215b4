package forecast

import (
	"fmt"
	"sort"
	"strings"
)

// Model is one incremental forecaster for one series. Observe is called after
// every Push with the new sample; Predict writes the point forecast for steps
// 1..len(out) after the newest sample. Models keep O(1) or O(window) state and
// never re-read the whole history.
type Model interface {
	Observe(h *History, x float32)
	Predict(h *History, out []float32)
}

// Params are what a model may know about its series: the grid step and the
// longest horizon it will be asked for.
type Params struct {
	Step    float64 // seconds between samples
	Horizon int     // steps
	Day     float64 // seconds in the daily cycle; 0 is 86400
}

// day and week are the seasonal periods in samples, or 0 when the step does
// not divide them into at least a few samples.
func (p Params) day() int  { return period(p.daySeconds(), p.Step) }
func (p Params) week() int { return period(7*p.daySeconds(), p.Step) }

func (p Params) daySeconds() float64 {
	if p.Day > 0 {
		return p.Day
	}
	return 86400
}

func period(sec, step float64) int {
	if step <= 0 {
		return 0
	}
	n := int(sec/step + 0.5)
	if n < 4 {
		return 0
	}
	return n
}

// Spec describes a registered model.
type Spec struct {
	Name string
	Doc  string
	New  func(Params) Model
}

var registry = map[string]Spec{}

// Register adds a model to the table; names are unique.
func Register(s Spec) {
	if _, dup := registry[s.Name]; dup {
		panic("forecast: duplicate model " + s.Name)
	}
	registry[s.Name] = s
}

// Lookup returns the named model.
func Lookup(name string) (Spec, error) {
	s, ok := registry[name]
	if !ok {
		return Spec{}, fmt.Errorf("unknown model %q (have %s)", name, strings.Join(Names(), ", "))
	}
	return s, nil
}

// Names lists the registered models, sorted.
func Names() []string {
	var ns []string
	for n := range registry {
		ns = append(ns, n)
	}
	sort.Strings(ns)
	return ns
}

// DefaultModel is the name of the engine's own choice.
const DefaultModel = "default"

func init() {
	for _, s := range []Spec{
		{"last", "last value", func(Params) Model { return &lastModel{} }},
		{"mean12", "mean of the last 12 samples", func(Params) Model { return newMean(12) }},
		{"median6", "median of the last 6 samples", func(Params) Model { return newMedian(6) }},
		{"median24", "median of the last 24 samples", func(Params) Model { return newMedian(24) }},
		{"median96", "median of the last 96 samples", func(Params) Model { return newMedian(96) }},
		{"ewma", "exponentially weighted mean, alpha 0.3", func(Params) Model { return &ewma{alpha: 0.3} }},
		{"holt", "Holt's linear trend, damped (alpha 0.3, beta 0.05, phi 0.9)", func(Params) Model { return newHolt() }},
		{"seasonal", "seasonal naive: same time last week, else yesterday, else last value", func(p Params) Model { return &seasonal{day: p.day(), week: p.week()} }},
		{"holtwinters", "additive Holt-Winters with a daily season once a day of history exists, damped Holt before", func(p Params) Model { return newHoltWinters(p.day()) }},
		{"ar", "AR(6) by exponentially weighted least squares (gonum LAPACK), iterated", func(Params) Model { return newAR() }},
		{DefaultModel, "online blend of the models above, weighted per VM and step by recent absolute error", func(p Params) Model { return newBlend(p) }},
	} {
		Register(s)
	}
}
