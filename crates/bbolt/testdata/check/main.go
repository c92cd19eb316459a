// Command check opens a bbolt file with go.etcd.io/bbolt, runs tx.Check() and
// prints the whole content in order, so the Rust tests of crate etcd-bbolt can
// compare what Go's bbolt sees with what the Rust writer wrote.
//
// Usage: go run main.go [-put BUCKET KEY VALUE] FILE
//
// Build in GOPATH mode (GO111MODULE=off) against Debian's
// golang-github-coreos-bbolt-dev. Output, one item a line:
//
//	pagesize N
//	check ok              (or one "check error: ..." line per problem)
//	bucket HEXNAME        (every top-level bucket, in order)
//	key HEXKEY HEXVALUE   (its entries, in order)
//	nested HEXKEY         (a nested bucket inside a top-level bucket)
//
// With -put, the file is opened read-write, one key is put in a new
// transaction (bucket created if missing) and the file checked again before
// the listing is printed. The exit status is 1 if any check reported errors.
package main

import (
	"encoding/hex"
	"flag"
	"fmt"
	"os"

	bolt "go.etcd.io/bbolt"
)

func check(db *bolt.DB, label string) int {
	n := 0
	err := db.View(func(tx *bolt.Tx) error {
		for e := range tx.Check() {
			fmt.Printf("check error%s: %v\n", label, e)
			n++
		}
		return nil
	})
	if err != nil {
		fmt.Printf("check error%s: view: %v\n", label, err)
		n++
	}
	if n == 0 {
		fmt.Printf("check%s ok\n", label)
	}
	return n
}

func main() {
	put := flag.Bool("put", false, "put BUCKET KEY VALUE (three arguments before FILE) in a new transaction")
	flag.Parse()
	args := flag.Args()
	if (*put && len(args) != 4) || (!*put && len(args) != 1) {
		fmt.Fprintln(os.Stderr, "usage: check [-put BUCKET KEY VALUE] FILE")
		os.Exit(2)
	}
	path := args[len(args)-1]

	db, err := bolt.Open(path, 0600, &bolt.Options{ReadOnly: !*put})
	if err != nil {
		fmt.Printf("open error: %v\n", err)
		os.Exit(1)
	}
	defer db.Close()
	fmt.Printf("pagesize %d\n", db.Info().PageSize)

	errs := check(db, "")
	if *put {
		err := db.Update(func(tx *bolt.Tx) error {
			b, err := tx.CreateBucketIfNotExists([]byte(args[0]))
			if err != nil {
				return err
			}
			return b.Put([]byte(args[1]), []byte(args[2]))
		})
		if err != nil {
			fmt.Printf("put error: %v\n", err)
			os.Exit(1)
		}
		errs += check(db, " after put")
	}

	err = db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			fmt.Printf("bucket %s\n", hex.EncodeToString(name))
			return b.ForEach(func(k, v []byte) error {
				if v == nil && b.Bucket(k) != nil {
					fmt.Printf("nested %s\n", hex.EncodeToString(k))
				} else {
					fmt.Printf("key %s %s\n", hex.EncodeToString(k), hex.EncodeToString(v))
				}
				return nil
			})
		})
	})
	if err != nil {
		fmt.Printf("list error: %v\n", err)
		os.Exit(1)
	}
	if errs > 0 {
		os.Exit(1)
	}
}
