// Command gen writes the bbolt fixtures that the tests of crate etcd-bbolt
// read: gen.db (read back and compared with content the test recomputes) and
// nested.db (a nested bucket, which the Rust reader must refuse).
//
// Usage (GOPATH mode against Debian's golang-github-coreos-bbolt-dev):
//
//	GO111MODULE=off GOPATH=<dir with src/go.etcd.io/bbolt and src/golang.org/x/sys> \
//	    go run main.go OUTDIR
//
// The content is deterministic (no randomness, no clock); the page layout is
// whatever bbolt 1.3 makes of it. Pages are 512 bytes so that a small file has
// a tree several levels deep, overflow pages and a freelist spanning pages.
// The functions below are mirrored by tests/fixtures.rs: change both together.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	bolt "go.etcd.io/bbolt"
)

const pageSize = 512

// Number of keys ever put in bucket "big".
const bigN = 1000

func bigKey(i int) []byte { return []byte(fmt.Sprintf("%08d", i)) }

// bigVal is the value of key i in bucket "big", generation gen (0 or 1):
// (i+gen)%9 bytes, byte j being (i*31+j*7+gen) mod 256.
func bigVal(i, gen int) []byte {
	v := make([]byte, (i+gen)%9)
	for j := range v {
		v[j] = byte(i*31 + j*7 + gen)
	}
	return v
}

// blob returns n bytes, byte j being (j*13+seed) mod 251.
func blob(n, seed int) []byte {
	v := make([]byte, n)
	for j := range v {
		v[j] = byte((j*13 + seed) % 251)
	}
	return v
}

var blobSizes = []int{300, 512, 1000, 3000, 5000}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func open(path string) *bolt.DB {
	_ = os.Remove(path)
	db, err := bolt.Open(path, 0600, &bolt.Options{PageSize: pageSize})
	must(err)
	return db
}

// shrink cuts the file after its high-water mark (as a snapshot made with
// tx.WriteTo would be), dropping the space bbolt preallocates.
func shrink(path string) {
	db, err := bolt.Open(path, 0600, &bolt.Options{ReadOnly: true})
	must(err)
	var size int64
	must(db.View(func(tx *bolt.Tx) error { size = tx.Size(); return nil }))
	must(db.Close())
	must(os.Truncate(path, size))
}

func genDB(path string) {
	db := open(path)
	defer shrink(path)
	defer db.Close()

	// Buckets, each made in its own transaction.
	for _, name := range []string{"big", "blobs", "empty", "gone", "inline", "single"} {
		must(db.Update(func(tx *bolt.Tx) error {
			_, err := tx.CreateBucket([]byte(name))
			return err
		}))
	}

	// "big": keys put in a scrambled order, 100 a transaction.
	for start := 0; start < bigN; start += 100 {
		must(db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket([]byte("big"))
			for j := start; j < start+100; j++ {
				i := (j * 1237) % bigN
				if err := b.Put(bigKey(i), bigVal(i, 0)); err != nil {
					return err
				}
			}
			return nil
		}))
	}

	// "gone": filled, so it has pages, then deleted below.
	must(db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("gone"))
		for i := 0; i < 100; i++ {
			if err := b.Put(bigKey(i), blob(20, i)); err != nil {
				return err
			}
		}
		return nil
	}))

	// "blobs": values spanning overflow pages.
	for k, n := range blobSizes {
		must(db.Update(func(tx *bolt.Tx) error {
			return tx.Bucket([]byte("blobs")).Put([]byte(fmt.Sprintf("b%d", k)), blob(n, k))
		}))
	}

	// "inline" stays small enough to be stored inside the root bucket's leaf;
	// "single" is one leaf page but too big to be inline (> pageSize/4).
	must(db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("inline"))
		for _, kv := range [][2]string{{"a", "1"}, {"b", "2"}, {"c", "3"}} {
			if err := b.Put([]byte(kv[0]), []byte(kv[1])); err != nil {
				return err
			}
		}
		s := tx.Bucket([]byte("single"))
		for i := 0; i < 4; i++ {
			if err := s.Put([]byte(fmt.Sprintf("s%d", i)), blob(20, 100+i)); err != nil {
				return err
			}
		}
		return nil
	}))

	// Deletions and overwrites, so pages are freed and reused.
	must(db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("big"))
		for i := 0; i < bigN; i += 5 {
			if err := b.Delete(bigKey(i)); err != nil {
				return err
			}
		}
		return nil
	}))
	must(db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("big"))
		for i := 0; i < bigN; i += 11 {
			if i%5 != 0 {
				if err := b.Put(bigKey(i), bigVal(i, 1)); err != nil {
					return err
				}
			}
		}
		return nil
	}))
	must(db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("blobs"))
		if err := b.Put([]byte("b2"), blob(2000, 42)); err != nil {
			return err
		}
		return b.Delete([]byte("b4"))
	}))
	must(db.Update(func(tx *bolt.Tx) error { return tx.DeleteBucket([]byte("gone")) }))
}

func nestedDB(path string) {
	db := open(path)
	defer shrink(path)
	defer db.Close()
	must(db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket([]byte("outer"))
		if err != nil {
			return err
		}
		if err := b.Put([]byte("k"), []byte("v")); err != nil {
			return err
		}
		inner, err := b.CreateBucket([]byte("inner"))
		if err != nil {
			return err
		}
		return inner.Put([]byte("x"), []byte("y"))
	}))
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: gen OUTDIR")
		os.Exit(2)
	}
	genDB(filepath.Join(os.Args[1], "gen.db"))
	nestedDB(filepath.Join(os.Args[1], "nested.db"))
}
