package etcdtest

import (
	"runtime"
	"testing"
	"time"
)

// etcd outlives the OS thread of the goroutine that started it: a goroutine
// locked to its thread that ends without unlocking takes the thread with it,
// and Pdeathsig must not follow. Three tries: a goroutine that happens to run
// on the main thread wedges it instead of ending it, and would prove nothing.
func TestEtcdOutlivesTheStartingThread(t *testing.T) {
	if _, err := Binary(); err != nil {
		t.Skip("etcd unavailable: ", err)
	}
	var ss []*Server
	for range 3 {
		done := make(chan *Server)
		go func() {
			runtime.LockOSThread() // not unlocked: the thread exits with the goroutine
			done <- Start(t)
		}()
		ss = append(ss, <-done)
	}
	time.Sleep(time.Second)
	for i, s := range ss {
		select {
		case <-s.exited:
			t.Fatalf("etcd %d died with the thread that started it: %s", i, s.out.String())
		default:
		}
		if !healthy(s.Addr) {
			t.Fatalf("etcd %d not healthy after its starting thread ended", i)
		}
	}
}
