package store

import (
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// Blobs are named byte strings kept beside the events, in their own bucket:
// state a restarted controller wants back, such as the forecast engine's.
var bBlobs = []byte("blobs")

// PutBlob stores b under name, replacing any earlier value, in one fsynced
// transaction: a reader sees the old blob or the new one, never a mix.
func (l *Log) PutBlob(name string, b []byte) error {
	if name == "" {
		return fmt.Errorf("blob: empty name")
	}
	err := l.db.Update(func(tx *bolt.Tx) error {
		bk, err := tx.CreateBucketIfNotExists(bBlobs)
		if err != nil {
			return err
		}
		return bk.Put([]byte(name), b)
	})
	if err != nil {
		return fmt.Errorf("blob %q: %w", name, err)
	}
	return nil
}

// GetBlob returns a copy of the blob stored under name; ok is false when
// there is none.
func (l *Log) GetBlob(name string) (b []byte, ok bool, err error) {
	err = l.db.View(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bBlobs)
		if bk == nil {
			return nil
		}
		if v := bk.Get([]byte(name)); v != nil {
			b, ok = append([]byte{}, v...), true
		}
		return nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("blob %q: %w", name, err)
	}
	return b, ok, nil
}
