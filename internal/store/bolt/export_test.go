package bolt

import bbolt "go.etcd.io/bbolt"

// PagesWritten returns how many pages the DB's commits have written since
// it was opened (bbolt's TxStats.Write), for benchmarks.
func (db *DB) PagesWritten() int64 {
	s := db.db.Stats()
	return s.TxStats.GetWrite()
}

// LeafFill returns how full the leaf pages of the top-level bucket name
// are (bytes in use over bytes allocated), for tests.
func (db *DB) LeafFill(name string) (fill float64, err error) {
	err = db.db.View(func(btx *bbolt.Tx) error {
		s := btx.Bucket([]byte(name)).Stats()
		fill = float64(s.LeafInuse) / float64(max(1, s.LeafAlloc))
		return nil
	})
	return fill, err
}
