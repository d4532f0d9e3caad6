// Package xen holds the Xen naming rules and xenstore protocols that cdswap shares with
// libxl (tools/libs/light in xen.git), so that cdswap and xl can work on the same domains:
//
//   - virtual device names and device numbers (ParseVdev, DevID), as
//     libxl__device_disk_dev_number and libxl__devid_to_vdev compute them;
//   - the XenbusState values of xen/include/public/io/xenbus.h;
//   - the xenstore and file system paths libxl uses for a domain's disks, device model and
//     userdata (JSON configuration and lock files), and the disk entries of that JSON
//     configuration (Disk);
//   - the vbd add/remove protocol of libxl__device_generic_add,
//     libxl__wait_device_connection and libxl__initiate_device_generic_remove, and how
//     libxl_cdrom_insert finds a cdrom (FindCDROM), over package xs;
//   - libxl's flock-based lock files (Lock).
//
// Everything that talks to xenstore takes a context and goes through package xs.
package xen
