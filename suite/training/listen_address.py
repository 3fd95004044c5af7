"""Makes a cluster task's TensorFlow server listen on the one address its
cluster entry names, not on every interface of the machine.

Why this exists: TensorFlow's gRPC server (grpc_server_lib.cc) always
listens on "0.0.0.0:PORT", whatever host the cluster names, and its worker
service runs any graph a peer sends it: a worker started as 127.0.0.1:2222
would run code for anyone who can reach port 2222 from the network.
TensorFlow offers no setting for the address, so while the server starts,
the C library's bind() is replaced, for TensorFlow's own libraries only, by
one that turns a wildcard bind to that port into a bind to the named
address; it is put back as soon as the server listens.

The replacement goes through the libraries' relocation slots for bind (the
table a shared library calls libc through), found from their ELF headers.
That is Linux on x86-64 or ARM64; elsewhere, or if TensorFlow's server
binds another way, listening_only_on() says so and the caller warns that
the port is open on every interface.
"""
import contextlib
import ctypes
import ipaddress
import os
import re
import socket
import struct
import threading

import numpy

# ELF constants (the System V ABI and its x86-64 and AArch64 supplements).
_ELF_MAGIC = b"\x7fELF"
_SHT_RELA = 4
_RELOCATIONS = {62: (6, 7),          # x86-64: R_X86_64_GLOB_DAT, R_X86_64_JUMP_SLOT
                183: (1025, 1026)}   # AArch64: R_AARCH64_GLOB_DAT, R_AARCH64_JUMP_SLOT
_PROT_READ_WRITE = 3
_ELF_SYMBOL = numpy.dtype([("name", "<u4"), ("info", "u1"), ("other", "u1"),
                           ("section", "<u2"), ("value", "<u8"), ("size", "<u8")])
_ELF_RELOCATION = numpy.dtype([("offset", "<u8"), ("info", "<u8"), ("addend", "<i8")])

_BIND = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_uint32,
                         use_errno=True)


class CannotRestrict(Exception):
    """This platform's TensorFlow cannot be made to listen on one address; str() says why."""


def resolve_listen_address(host):
    """The IP address a task named host listens on: an IPv4 address where the
    name has one (localhost is 127.0.0.1), else its first IPv6 address.
    Raises OSError for a name that does not resolve."""
    addresses = [info[4][0] for info in socket.getaddrinfo(
        host.strip("[]"), None, type=socket.SOCK_STREAM)]
    ipv4 = [a for a in addresses if ipaddress.ip_address(a.split("%")[0]).version == 4]
    return (ipv4 or addresses)[0]


def _bind_relocations(path):
    """The virtual addresses of the slots through which the shared library at
    path calls bind(). Reads only the headers and the dynamic symbol and
    relocation tables (TensorFlow's largest library is over 1 GB)."""
    with open(path, "rb") as f:
        header = f.read(64)
        if header[:4] != _ELF_MAGIC or header[4] != 2 or header[5] != 1:
            raise CannotRestrict(f"{path} is not a 64-bit little-endian ELF library")
        machine, = struct.unpack_from("<H", header, 0x12)
        if machine not in _RELOCATIONS:
            raise CannotRestrict(f"no support for ELF machine type {machine}")
        section_offset, = struct.unpack_from("<Q", header, 0x28)
        entry_size, count = struct.unpack_from("<HH", header, 0x3A)
        f.seek(section_offset)
        table = f.read(entry_size * count)
        sections = [struct.unpack_from("<IIQQQQIIQQ", table, i * entry_size)
                    for i in range(count)]

        def read(section, dtype=numpy.uint8):
            f.seek(section[4])
            return numpy.frombuffer(f.read(section[5]), dtype)

        slots = []
        for section in sections:
            if section[1] != _SHT_RELA:
                continue
            symbols = read(sections[section[6]], _ELF_SYMBOL)
            names = read(sections[sections[section[6]][6]]).tobytes()
            bind_names = {m.start() for m in re.finditer(rb"(?<=\0)bind\0", names)}
            wanted = numpy.flatnonzero(numpy.isin(symbols["name"], list(bind_names)))
            relocations = read(section, _ELF_RELOCATION)
            kinds = relocations["info"] & 0xFFFFFFFF
            symbol = relocations["info"] >> numpy.uint64(32)
            hits = numpy.isin(kinds, _RELOCATIONS[machine]) & numpy.isin(symbol, wanted)
            slots += [int(offset) for offset in relocations["offset"][hits]]
    return slots


def _load_address(path):
    """Where the library at path is mapped in this process (its first page)."""
    real = os.path.realpath(path)
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            if len(fields) >= 6 and int(fields[2], 16) == 0 and \
                    os.path.realpath(fields[5]) == real:
                return int(fields[0].split("-")[0], 16)
    raise CannotRestrict(f"{path} is not loaded")


def _tensorflow_libraries():
    import tensorflow as tf
    folder = os.path.dirname(tf.__file__)
    return [os.path.join(folder, name) for name in os.listdir(folder)
            if name.startswith("libtensorflow") and ".so" in name]


class _Rebinder:
    """The bind() put in TensorFlow's slots: a wildcard bind (0.0.0.0 or ::)
    to port becomes a bind to address; every other call passes through."""

    def __init__(self, address, port):
        self.ip = ipaddress.ip_address(address.split("%")[0])
        self.port = port
        self.rewritten = 0
        libc = ctypes.CDLL(None, use_errno=True)
        self.real_bind = _BIND(ctypes.cast(libc.bind, ctypes.c_void_p).value)
        self.function = _BIND(self._bind)

    def _bind(self, fd, sockaddr, length):
        family = ctypes.c_uint16.from_address(sockaddr).value
        raw = bytearray(ctypes.string_at(sockaddr, length))
        port = struct.unpack_from("!H", raw, 2)[0]
        if port != self.port:
            return self.real_bind(fd, sockaddr, length)
        if family == socket.AF_INET and raw[4:8] == bytes(4) and self.ip.version == 4:
            raw[4:8] = self.ip.packed
        elif family == socket.AF_INET6 and raw[8:24] == bytes(16):
            # gRPC listens on a dual-stack IPv6 socket: an IPv4 address is
            # bound in its IPv4-mapped form (::ffff:a.b.c.d).
            raw[8:24] = (self.ip.packed if self.ip.version == 6
                         else ipaddress.IPv6Address(f"::ffff:{self.ip}").packed)
        else:
            return self.real_bind(fd, sockaddr, length)
        self.rewritten += 1
        replacement = ctypes.create_string_buffer(bytes(raw), len(raw))
        return self.real_bind(fd, ctypes.addressof(replacement), length)


_PATCHING = threading.Lock()


@contextlib.contextmanager
def listening_only_on(address, port):
    """While in this block, a TensorFlow server started for port listens on
    address only. Yields a function that tells, after the server started,
    whether a bind was redirected. Raises CannotRestrict (nothing changed)
    where the platform does not allow it."""
    if not os.path.exists("/proc/self/maps"):
        raise CannotRestrict("not Linux")
    rebinder = _Rebinder(address, port)
    replacement = ctypes.cast(rebinder.function, ctypes.c_void_p).value
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    page = os.sysconf("SC_PAGE_SIZE")
    slots = []
    for library in _tensorflow_libraries():
        addresses = _bind_relocations(library)
        if not addresses:
            continue
        base = _load_address(library)
        for address in addresses:
            # Full RELRO leaves the slots read-only once the library is loaded.
            if libc.mprotect((base + address) & ~(page - 1), page, _PROT_READ_WRITE) != 0:
                raise CannotRestrict(f"mprotect: {os.strerror(ctypes.get_errno())}")
            slots.append(ctypes.c_void_p.from_address(base + address))
    if not slots:
        raise CannotRestrict("TensorFlow's libraries call no bind() this module can redirect")
    with _PATCHING:
        originals = [slot.value for slot in slots]
        try:
            for slot in slots:
                slot.value = replacement
            yield lambda: rebinder.rewritten > 0
        finally:
            for slot, original in zip(slots, originals):
                slot.value = original
