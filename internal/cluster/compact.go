package cluster

import "github.com/headroom/headroom/internal/model"

// OtherNeed is the sum of what h's VMs need of memory, network and disk (CPU 0),
// the value NoRoomFor adds v's need to. Like the VM lists, it changes only where
// Changes lists h.
func (st *State) OtherNeed(h int) model.Resources { return st.other[h] }
