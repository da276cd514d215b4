package forecast

import "math"

func sinDay(i int) float64 { return math.Sin(2 * math.Pi * float64(i) / 288) }
