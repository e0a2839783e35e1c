package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
)

// entry is one file of a package as the package describes it.
type entry struct {
	mode  fs.FileMode // permission bits and the directory bit
	owner string
	// config and noreplace are the rpm file flags; a .deb lists its conffiles instead.
	config, noreplace bool
}

// debPackage is what a .deb holds: its files and the members of its control archive.
type debPackage struct {
	files   map[string]entry  // by absolute path, directories without a trailing slash
	control map[string]string // control, conffiles, postinst, ...
}

// readDeb reads a .deb with the standard library alone: an ar archive of debian-binary,
// control.tar.gz and data.tar.gz.
func readDeb(path string) (debPackage, error) {
	pkg := debPackage{files: map[string]entry{}, control: map[string]string{}}
	b, err := os.ReadFile(path)
	if err != nil {
		return pkg, err
	}
	if !bytes.HasPrefix(b, []byte("!<arch>\n")) {
		return pkg, errors.New("not an ar archive")
	}
	b = b[8:]
	for len(b) >= 60 {
		name := strings.TrimRight(strings.TrimSpace(string(b[:16])), "/")
		size, err := strconv.Atoi(strings.TrimSpace(string(b[48:58])))
		if err != nil || 60+size > len(b) {
			return pkg, fmt.Errorf("ar member %q: bad size", name)
		}
		data := b[60 : 60+size]
		b = b[60+size:]
		if size%2 == 1 && len(b) > 0 {
			b = b[1:]
		}
		switch name {
		case "control.tar.gz", "data.tar.gz":
			err = readTarGz(data, func(h *tar.Header, body []byte) {
				p := "/" + strings.Trim(strings.TrimPrefix(h.Name, "./"), "/")
				if name == "control.tar.gz" {
					pkg.control[strings.TrimPrefix(p, "/")] = string(body)
					return
				}
				mode := fs.FileMode(h.Mode).Perm()
				if h.Typeflag == tar.TypeDir {
					mode |= fs.ModeDir
				}
				pkg.files[p] = entry{mode: mode, owner: h.Uname + ":" + h.Gname}
			})
		case "debian-binary":
		default:
			err = fmt.Errorf("unexpected ar member %q (compression other than gzip?)", name)
		}
		if err != nil {
			return pkg, err
		}
	}
	return pkg, nil
}

func readTarGz(b []byte, each func(*tar.Header, []byte)) error {
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return err
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			return err
		}
		each(h, body)
	}
}

// rpmPackage is what an .rpm's header says: its files and its scriptlets.
type rpmPackage struct {
	files   map[string]entry
	scripts map[string]string // postin, preun, postun
}

// Header tags and types of the rpm file format (rpm's lib/rpmtag.h).
const (
	rpmTagPostIn     = 1024
	rpmTagPreUn      = 1025
	rpmTagPostUn     = 1026
	rpmTagFileModes  = 1030
	rpmTagFileFlags  = 1037
	rpmTagFileUser   = 1039
	rpmTagFileGroup  = 1040
	rpmTagDirIndexes = 1116
	rpmTagBaseNames  = 1117
	rpmTagDirNames   = 1118

	rpmTypeInt16       = 3
	rpmTypeInt32       = 4
	rpmTypeString      = 6
	rpmTypeStringArray = 8

	rpmFileConfig    = 1 << 0
	rpmFileNoReplace = 1 << 4
)

// readRPM reads the file list of an .rpm from its header: the 96-byte lead, the signature
// header (padded to 8 bytes), then the main header.
func readRPM(path string) (rpmPackage, error) {
	pkg := rpmPackage{files: map[string]entry{}, scripts: map[string]string{}}
	b, err := os.ReadFile(path)
	if err != nil {
		return pkg, err
	}
	if len(b) < 96 || !bytes.Equal(b[:4], []byte{0xed, 0xab, 0xee, 0xdb}) {
		return pkg, errors.New("not an rpm (no lead)")
	}
	b = b[96:]
	_, n, err := rpmHeader(b)
	if err != nil {
		return pkg, fmt.Errorf("signature header: %w", err)
	}
	n = (n + 7) &^ 7
	if n > len(b) {
		return pkg, errors.New("signature header overruns the file")
	}
	tags, _, err := rpmHeader(b[n:])
	if err != nil {
		return pkg, fmt.Errorf("main header: %w", err)
	}
	base, dirs := tags[rpmTagBaseNames].strings, tags[rpmTagDirNames].strings
	idx, modes, flags := tags[rpmTagDirIndexes].ints, tags[rpmTagFileModes].ints, tags[rpmTagFileFlags].ints
	users, groups := tags[rpmTagFileUser].strings, tags[rpmTagFileGroup].strings
	for i, name := range base {
		if i >= len(idx) || i >= len(modes) || i >= len(flags) || i >= len(users) || i >= len(groups) || int(idx[i]) >= len(dirs) {
			return pkg, errors.New("file tags of different lengths")
		}
		mode := fs.FileMode(modes[i] & 0o777)
		if modes[i]&0o170000 == 0o040000 {
			mode |= fs.ModeDir
		}
		p := strings.TrimSuffix(dirs[idx[i]]+name, "/")
		pkg.files[p] = entry{mode: mode, owner: users[i] + ":" + groups[i],
			config: flags[i]&rpmFileConfig != 0, noreplace: flags[i]&rpmFileNoReplace != 0}
	}
	for tag, name := range map[int]string{rpmTagPostIn: "postin", rpmTagPreUn: "preun", rpmTagPostUn: "postun"} {
		if s := tags[tag].strings; len(s) == 1 {
			pkg.scripts[name] = s[0]
		}
	}
	return pkg, nil
}

// rpmValue is one header entry's data.
type rpmValue struct {
	ints    []int64
	strings []string
}

// rpmHeader parses one header structure at the start of b and returns its entries and its
// length in bytes.
func rpmHeader(b []byte) (map[int]rpmValue, int, error) {
	if len(b) < 16 || !bytes.Equal(b[:3], []byte{0x8e, 0xad, 0xe8}) {
		return nil, 0, errors.New("no header magic")
	}
	nindex := int(binary.BigEndian.Uint32(b[8:]))
	hsize := int(binary.BigEndian.Uint32(b[12:]))
	end := 16 + nindex*16 + hsize
	if nindex > 1<<16 || hsize > 1<<28 || end > len(b) {
		return nil, 0, errors.New("header overruns the file")
	}
	store := b[16+nindex*16 : end]
	out := map[int]rpmValue{}
	for i := range nindex {
		e := b[16+i*16:]
		tag := int(binary.BigEndian.Uint32(e))
		typ := binary.BigEndian.Uint32(e[4:])
		off := int(binary.BigEndian.Uint32(e[8:]))
		count := int(binary.BigEndian.Uint32(e[12:]))
		if off > len(store) {
			return nil, 0, fmt.Errorf("tag %d: offset out of the store", tag)
		}
		d := store[off:]
		var v rpmValue
		switch typ {
		case rpmTypeInt16, rpmTypeInt32:
			size := 2
			if typ == rpmTypeInt32 {
				size = 4
			}
			if count*size > len(d) {
				return nil, 0, fmt.Errorf("tag %d: overruns the store", tag)
			}
			for j := range count {
				if size == 2 {
					v.ints = append(v.ints, int64(binary.BigEndian.Uint16(d[j*2:])))
				} else {
					v.ints = append(v.ints, int64(binary.BigEndian.Uint32(d[j*4:])))
				}
			}
		case rpmTypeString, rpmTypeStringArray:
			for range count {
				n := bytes.IndexByte(d, 0)
				if n < 0 {
					return nil, 0, fmt.Errorf("tag %d: unterminated string", tag)
				}
				v.strings = append(v.strings, string(d[:n]))
				d = d[n+1:]
			}
		}
		out[tag] = v
	}
	return out, end, nil
}
