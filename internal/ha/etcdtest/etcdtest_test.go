package etcdtest

import (
	"runtime"
	"testing"
	"time"
)

// etcd outlives the OS thread of the goroutine that started it: a goroutine
// locked to its thread that ends without unlocking takes the thread with it,
// and Pdeathsig must not follow.
func TestEtcdOutlivesTheStartingThread(t *testing.T) {
	if _, err := Binary(); err != nil {
		t.Skip("etcd unavailable: ", err)
	}
	done := make(chan *Server)
	go func() {
		runtime.LockOSThread() // not unlocked: the thread exits with the goroutine
		done <- Start(t)
	}()
	s := <-done
	time.Sleep(time.Second)
	select {
	case <-s.exited:
		t.Fatalf("etcd died with the thread that started it: %s", s.out.String())
	default:
	}
	if !healthy(s.Addr) {
		t.Fatal("etcd not healthy after its starting thread ended")
	}
}
