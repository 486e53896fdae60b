package bolt

// PagesWritten returns how many pages the DB's commits have written since
// it was opened (bbolt's TxStats.Write), for benchmarks.
func (db *DB) PagesWritten() int64 {
	s := db.db.Stats()
	return s.TxStats.GetWrite()
}
