package xen

import (
	"encoding/json"
	"fmt"
)

// Disk formats as libxl's JSON configuration names them (libxl_disk_format in
// libxl_types.idl, written lower-case): an empty cdrom has DiskFormatEmpty and no pdev_path.
const (
	DiskFormatRaw   = "raw"
	DiskFormatEmpty = "empty"
)

// Disk is one entry of the "disks" array of a domain's JSON configuration (ConfigPath):
// libxl_device_disk of libxl_types.idl, as libxl's JSON generator writes it, enumerations
// as their lower-case names and string fields left at their defaults omitted. Fields cdswap
// does not use are not listed; decoding ignores them.
type Disk struct {
	BackendDomID uint32 `json:"backend_domid"`
	// PdevPath is the image (absent for an empty cdrom).
	PdevPath string `json:"pdev_path,omitempty"`
	// Vdev is the name given in the domain config ("hdc"), the vbd's "dev".
	Vdev string `json:"vdev"`
	// Backend is "phy" or "qdisk".
	Backend string `json:"backend,omitempty"`
	// Format is a libxl_disk_format name (DiskFormatRaw, "qcow2", DiskFormatEmpty...).
	Format    string `json:"format"`
	Script    string `json:"script,omitempty"`
	Removable int    `json:"removable"`
	Readwrite int    `json:"readwrite"`
	IsCDROM   int    `json:"is_cdrom"`
}

// ConfigDisks decodes the "disks" of a domain's JSON configuration.
func ConfigDisks(raw []byte) ([]Disk, error) {
	var cfg struct {
		Disks []Disk `json:"disks"`
	}
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return nil, fmt.Errorf("decode the disks of a libxl JSON configuration: %w", err)
	}
	return cfg.Disks, nil
}
