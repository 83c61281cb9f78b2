package dircopy

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// Tree copies the tree at src into dst (created if missing): directories and regular files
// with their permission bits (directories keep at least the owner's rwx, so that the copy can
// be filled and removed). A file that exists in dst already, or anything in src that is not a
// directory or a regular file (a socket, a symbolic link), is an error naming it.
func Tree(dst, src string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		to := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return os.MkdirAll(to, info.Mode().Perm()|0o700)
		case !d.Type().IsRegular():
			return fmt.Errorf("dircopy: %s is not a regular file", p)
		}
		return File(to, p, info.Mode().Perm())
	})
}

// File copies the regular file src to dst, which must not exist, with mode.
func File(dst, src string, mode fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("dircopy: %s: %w", dst, err)
	}
	return out.Close()
}
