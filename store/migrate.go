package store

// Schema upgrades.
//
// The layout version is stored in meta "schema" (schema.go). Open reads
// it in its first write transaction and, when it is older than
// SchemaVersion, runs the upgrade steps from that version up in the same
// transaction, then writes the new version: bbolt commits all of it or
// none of it, so a crash during an upgrade leaves the old layout intact
// and the next start runs the upgrade again from the beginning. A
// database written by a newer mssrelay is refused, never misread.
//
// How to change the layout:
//
//  1. Only when encoded values or buckets really change. Appending a field
//     to an encoded value needs no new version (see the note at the top of
//     schema.go).
//  2. Bump SchemaVersion; the length of upgrades follows and the compiler
//     asks for the new step: upgrades[v] turns version v into v+1.
//  3. Extend buildV1 in migrate_test.go's chain (keep the v1 builder as it
//     is: it is the frozen picture of the released layout) and test that a
//     v1 database opens and reads back under the new version.
//
// A step runs inside Open's transaction, so it must fit in one bbolt
// transaction: a step that rewrites every record of a multi-gigabyte
// store needs its own batching design (and a note in docs/deployment.md
// asking for `mssrelay backup` before the upgrade).

import (
	"encoding/binary"
	"fmt"

	"go.etcd.io/bbolt"
)

// oldestSchema is the oldest layout Open upgrades from. Version 1 is the
// first released layout.
const oldestSchema = 1

// upgradeStep turns a database of version v into version v+1.
type upgradeStep func(tx *bbolt.Tx) error

// upgrades[v] upgrades version v to v+1, for oldestSchema <= v <
// SchemaVersion. Version 1 is current, so there is no step yet.
var upgrades = [SchemaVersion]upgradeStep{}

// schemaVersion reads the stored version: ok is false for a database
// without a meta bucket (a new file).
func schemaVersion(tx *bbolt.Tx, path string) (ver uint32, ok bool, err error) {
	mb := tx.Bucket(bucketMeta)
	if mb == nil {
		return 0, false, nil
	}
	v := mb.Get(keySchema)
	if len(v) != 4 {
		return 0, true, fmt.Errorf("store: %s: meta bucket without a valid schema version", path)
	}
	return binary.BigEndian.Uint32(v), true, nil
}

// upgrade brings a database of version from to version to with steps
// (steps[v] turns v into v+1), in tx, and records the new version. A
// version newer than to, or one for which no step exists, is refused
// before anything is written.
func upgrade(tx *bbolt.Tx, path string, from, to uint32, steps []upgradeStep) error {
	if from > to {
		return fmt.Errorf("store: %s has schema version %d, this mssrelay understands up to %d: run a newer mssrelay", path, from, to)
	}
	if from == to {
		return nil
	}
	for v := from; v < to; v++ {
		if int(v) >= len(steps) || steps[v] == nil {
			if v == from {
				return fmt.Errorf("store: %s: invalid schema version %d (this mssrelay upgrades from version %d up)", path, from, oldestSchema)
			}
			return fmt.Errorf("store: %s: schema version %d: no upgrade step from %d to %d (a bug in this build)", path, from, v, v+1)
		}
	}
	for v := from; v < to; v++ {
		if err := steps[v](tx); err != nil {
			return fmt.Errorf("store: %s: upgrade from schema version %d to %d: %w", path, v, v+1, err)
		}
	}
	mb, err := tx.CreateBucketIfNotExists(bucketMeta)
	if err != nil {
		return fmt.Errorf("store: %s: meta bucket: %w", path, err)
	}
	if err := mb.Put(keySchema, be32(to)); err != nil {
		return fmt.Errorf("store: %s: write schema version %d: %w", path, to, err)
	}
	return nil
}
