# A boot sector that locks the CD-ROM tray of the secondary IDE master, then halts: the
# guest side of TestAgainstQEMU's locked-tray check. It issues ATAPI REQUEST SENSE (to clear
# the unit attention of a fresh drive) and PREVENT ALLOW MEDIUM REMOVAL with Prevent=1,
# eight times, by polled PIO on ports 0x170-0x177. Build boot.bin with:
#
#   as --32 -o boot.o boot.S && ld -m elf_i386 -Ttext 0x7c00 --oformat binary -o boot.bin boot.o
.code16
.text
.globl _start
_start:
    cli
    xor %ax, %ax
    mov %ax, %ds
    mov $8, %cx
again:
    mov $sense, %si
    call packet
    mov $prevent, %si
    call packet
    loop again
halt:
    hlt
    jmp halt

# waitbsy spins until the channel's BSY bit clears.
waitbsy:
    mov $0x177, %dx
1:  in %dx, %al
    test $0x80, %al
    jnz 1b
    ret

# packet sends the 12-byte ATAPI packet at %si to the master, then reads and drops any data.
packet:
    push %cx
    call waitbsy
    mov $0x176, %dx
    mov $0xA0, %al
    out %al, %dx
    call waitbsy
    mov $0x171, %dx
    xor %al, %al
    out %al, %dx
    mov $0x174, %dx
    out %al, %dx
    mov $0x175, %dx
    mov $0x08, %al
    out %al, %dx
    mov $0x177, %dx
    mov $0xA0, %al
    out %al, %dx
2:  in %dx, %al
    test $0x80, %al
    jnz 2b
    test $0x08, %al
    jz 5f
    mov $0x170, %dx
    mov $6, %bx
3:  lodsw
    out %ax, %dx
    dec %bx
    jnz 3b
    mov $0x177, %dx
4:  in %dx, %al
    test $0x80, %al
    jnz 4b
    test $0x08, %al
    jz 5f
    mov $0x170, %dx
    in %dx, %ax
    mov $0x177, %dx
    jmp 4b
5:  pop %cx
    ret

sense:   .byte 0x03,0,0,0,18,0,0,0,0,0,0,0
prevent: .byte 0x1E,0,0,0,0x01,0,0,0,0,0,0,0
.org 510
.byte 0x55, 0xAA
