package dircopy

import (
	"os"
	"path/filepath"
	"testing"
)

func TestTree(t *testing.T) {
	src, dst := t.TempDir(), filepath.Join(t.TempDir(), "copy")
	if err := os.MkdirAll(filepath.Join(src, "a", "b"), 0o750); err != nil {
		t.Fatal(err)
	}
	for name, mode := range map[string]os.FileMode{"top": 0o644, "a/key": 0o600, "a/b/deep": 0o640} {
		if err := os.WriteFile(filepath.Join(src, name), []byte(name), mode); err != nil {
			t.Fatal(err)
		}
	}
	if err := Tree(dst, src); err != nil {
		t.Fatal(err)
	}
	for name, mode := range map[string]os.FileMode{"top": 0o644, "a/key": 0o600, "a/b/deep": 0o640} {
		b, err := os.ReadFile(filepath.Join(dst, name))
		st, serr := os.Stat(filepath.Join(dst, name))
		if err != nil || serr != nil || string(b) != name || st.Mode().Perm() != mode {
			t.Fatalf("%s: %q mode %v (%v %v)", name, b, st.Mode(), err, serr)
		}
	}
	// Copying again onto the copy refuses to overwrite a file.
	if err := Tree(dst, src); err == nil {
		t.Fatal("a second copy overwrote the files")
	}
	// A symbolic link is not copied.
	if err := os.Symlink("top", filepath.Join(src, "link")); err != nil {
		t.Fatal(err)
	}
	if err := Tree(filepath.Join(t.TempDir(), "again"), src); err == nil {
		t.Fatal("a symbolic link was copied")
	}
}
