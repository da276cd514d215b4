package controller

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"time"

	"github.com/headroom/headroom/internal/forecast"
)

// Forecast persistence: the engines' state (history, blend weights,
// calibration) is kept in the event log's blob bucket, so that a restart or an
// upgrade does not forget a week of learned daily and weekly patterns.
const (
	blobForecasts = "forecast-engine"
	blobDirty     = "forecast-dirty"
)

// saveEvery is how often, in cycles, Run saves the forecasts: at 5-minute
// intervals a crash loses at most an hour of learning; a clean stop loses none.
const saveEvery = 12

// warnf reports a persistence problem; tests capture it.
var warnf = func(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "headroom: warning: "+format+"\n", a...)
}

func (c *Controller) engines() []struct {
	name string
	e    *forecast.Engine
} {
	return []struct {
		name string
		e    *forecast.Engine
	}{{blobForecasts, c.eng}, {blobDirty, c.dirty}}
}

// LoadForecasts restores the engines from the event log. A missing, corrupt or
// incompatible snapshot is warned about and leaves that engine cold: it is
// never an error, since forecasts relearn within a day.
func (c *Controller) LoadForecasts() {
	for _, en := range c.engines() {
		b, ok, err := c.log.GetBlob(en.name)
		switch {
		case err != nil:
			warnf("forecast snapshot %s unreadable (%v); starting cold", en.name, err)
		case !ok:
			warnf("no forecast snapshot %s in the event log; starting cold", en.name)
		default:
			if err := en.e.Load(bytes.NewReader(b)); err != nil {
				warnf("forecast snapshot %s not loaded (%v); starting cold", en.name, err)
			}
		}
	}
}

// SaveForecasts writes the engines' snapshots to the event log.
func (c *Controller) SaveForecasts() error {
	for _, en := range c.engines() {
		var buf bytes.Buffer
		if err := en.e.Save(&buf); err != nil {
			return fmt.Errorf("forecast snapshot %s: %w", en.name, err)
		}
		if err := c.log.PutBlob(en.name, buf.Bytes()); err != nil {
			return fmt.Errorf("forecast snapshot %s: %w", en.name, err)
		}
	}
	return nil
}

// persistForecasts loads the snapshots, then saves every saveEvery intervals
// until ctx ends. The returned stop saves once more and must be called after
// the last cycle (Run defers it).
func (c *Controller) persistForecasts(ctx context.Context) (stop func()) {
	c.LoadForecasts()
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(saveEvery * c.cfg.Interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-done:
				return
			case <-t.C:
				if err := c.SaveForecasts(); err != nil {
					warnf("%v", err)
				}
			}
		}
	}()
	return func() {
		close(done)
		<-stopped
		if err := c.SaveForecasts(); err != nil {
			warnf("%v", err)
		}
	}
}
