package events

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// The ERESTART* codes: what a syscall returns when a signal interrupts it
// before it has done anything (include/linux/errno.h; neither syscall nor
// x/sys/unix defines them). No event carries one: the BPF exit holds such
// a call back until signal_deliver settles it as -EINTR or the kernel runs
// it again, and a task that dies meanwhile emits nothing (bpf/sfwatch.c).
// They stay because AppendText and Validate take any return value, not
// only those the BPF side emits: AppendText spells these as strace does
// ("= ? ERESTARTSYS", checked against strace with the rest of errnoTable),
// and Validate counts them in sendfile's contract (contractErrnos), as
// codes of the kernel's own rather than unexpected errors.
const (
	errRestartSys          syscall.Errno = 512 // ERESTARTSYS
	errRestartNoIntr       syscall.Errno = 513 // ERESTARTNOINTR
	errRestartNoHand       syscall.Errno = 514 // ERESTARTNOHAND
	errRestartRestartBlock syscall.Errno = 516 // ERESTART_RESTARTBLOCK
)

// errnoText is how strace names an errno and explains it.
type errnoText struct{ name, message string }

// errnoTable holds, for every errno strace 6.x knows, the name and text it
// prints: glibc's strerror for user-visible codes, strace's own texts for
// ERESTART*, and "Unknown error N" for the other kernel-internal codes. It is
// written out rather than taken from x/sys/unix because x/sys names 95
// ENOTSUP (strace says EOPNOTSUPP), lowercases the texts and lacks the
// kernel-internal codes. TestErrnoTableMatchesStrace checks every entry
// against the installed strace.
var errnoTable = [...]errnoText{
	unix.EPERM:           {"EPERM", "Operation not permitted"},
	unix.ENOENT:          {"ENOENT", "No such file or directory"},
	unix.ESRCH:           {"ESRCH", "No such process"},
	unix.EINTR:           {"EINTR", "Interrupted system call"},
	unix.EIO:             {"EIO", "Input/output error"},
	unix.ENXIO:           {"ENXIO", "No such device or address"},
	unix.E2BIG:           {"E2BIG", "Argument list too long"},
	unix.ENOEXEC:         {"ENOEXEC", "Exec format error"},
	unix.EBADF:           {"EBADF", "Bad file descriptor"},
	unix.ECHILD:          {"ECHILD", "No child processes"},
	unix.EAGAIN:          {"EAGAIN", "Resource temporarily unavailable"},
	unix.ENOMEM:          {"ENOMEM", "Cannot allocate memory"},
	unix.EACCES:          {"EACCES", "Permission denied"},
	unix.EFAULT:          {"EFAULT", "Bad address"},
	unix.ENOTBLK:         {"ENOTBLK", "Block device required"},
	unix.EBUSY:           {"EBUSY", "Device or resource busy"},
	unix.EEXIST:          {"EEXIST", "File exists"},
	unix.EXDEV:           {"EXDEV", "Invalid cross-device link"},
	unix.ENODEV:          {"ENODEV", "No such device"},
	unix.ENOTDIR:         {"ENOTDIR", "Not a directory"},
	unix.EISDIR:          {"EISDIR", "Is a directory"},
	unix.EINVAL:          {"EINVAL", "Invalid argument"},
	unix.ENFILE:          {"ENFILE", "Too many open files in system"},
	unix.EMFILE:          {"EMFILE", "Too many open files"},
	unix.ENOTTY:          {"ENOTTY", "Inappropriate ioctl for device"},
	unix.ETXTBSY:         {"ETXTBSY", "Text file busy"},
	unix.EFBIG:           {"EFBIG", "File too large"},
	unix.ENOSPC:          {"ENOSPC", "No space left on device"},
	unix.ESPIPE:          {"ESPIPE", "Illegal seek"},
	unix.EROFS:           {"EROFS", "Read-only file system"},
	unix.EMLINK:          {"EMLINK", "Too many links"},
	unix.EPIPE:           {"EPIPE", "Broken pipe"},
	unix.EDOM:            {"EDOM", "Numerical argument out of domain"},
	unix.ERANGE:          {"ERANGE", "Numerical result out of range"},
	unix.EDEADLK:         {"EDEADLK", "Resource deadlock avoided"},
	unix.ENAMETOOLONG:    {"ENAMETOOLONG", "File name too long"},
	unix.ENOLCK:          {"ENOLCK", "No locks available"},
	unix.ENOSYS:          {"ENOSYS", "Function not implemented"},
	unix.ENOTEMPTY:       {"ENOTEMPTY", "Directory not empty"},
	unix.ELOOP:           {"ELOOP", "Too many levels of symbolic links"},
	unix.ENOMSG:          {"ENOMSG", "No message of desired type"},
	unix.EIDRM:           {"EIDRM", "Identifier removed"},
	unix.ECHRNG:          {"ECHRNG", "Channel number out of range"},
	unix.EL2NSYNC:        {"EL2NSYNC", "Level 2 not synchronized"},
	unix.EL3HLT:          {"EL3HLT", "Level 3 halted"},
	unix.EL3RST:          {"EL3RST", "Level 3 reset"},
	unix.ELNRNG:          {"ELNRNG", "Link number out of range"},
	unix.EUNATCH:         {"EUNATCH", "Protocol driver not attached"},
	unix.ENOCSI:          {"ENOCSI", "No CSI structure available"},
	unix.EL2HLT:          {"EL2HLT", "Level 2 halted"},
	unix.EBADE:           {"EBADE", "Invalid exchange"},
	unix.EBADR:           {"EBADR", "Invalid request descriptor"},
	unix.EXFULL:          {"EXFULL", "Exchange full"},
	unix.ENOANO:          {"ENOANO", "No anode"},
	unix.EBADRQC:         {"EBADRQC", "Invalid request code"},
	unix.EBADSLT:         {"EBADSLT", "Invalid slot"},
	unix.EBFONT:          {"EBFONT", "Bad font file format"},
	unix.ENOSTR:          {"ENOSTR", "Device not a stream"},
	unix.ENODATA:         {"ENODATA", "No data available"},
	unix.ETIME:           {"ETIME", "Timer expired"},
	unix.ENOSR:           {"ENOSR", "Out of streams resources"},
	unix.ENONET:          {"ENONET", "Machine is not on the network"},
	unix.ENOPKG:          {"ENOPKG", "Package not installed"},
	unix.EREMOTE:         {"EREMOTE", "Object is remote"},
	unix.ENOLINK:         {"ENOLINK", "Link has been severed"},
	unix.EADV:            {"EADV", "Advertise error"},
	unix.ESRMNT:          {"ESRMNT", "Srmount error"},
	unix.ECOMM:           {"ECOMM", "Communication error on send"},
	unix.EPROTO:          {"EPROTO", "Protocol error"},
	unix.EMULTIHOP:       {"EMULTIHOP", "Multihop attempted"},
	unix.EDOTDOT:         {"EDOTDOT", "RFS specific error"},
	unix.EBADMSG:         {"EBADMSG", "Bad message"},
	unix.EOVERFLOW:       {"EOVERFLOW", "Value too large for defined data type"},
	unix.ENOTUNIQ:        {"ENOTUNIQ", "Name not unique on network"},
	unix.EBADFD:          {"EBADFD", "File descriptor in bad state"},
	unix.EREMCHG:         {"EREMCHG", "Remote address changed"},
	unix.ELIBACC:         {"ELIBACC", "Can not access a needed shared library"},
	unix.ELIBBAD:         {"ELIBBAD", "Accessing a corrupted shared library"},
	unix.ELIBSCN:         {"ELIBSCN", ".lib section in a.out corrupted"},
	unix.ELIBMAX:         {"ELIBMAX", "Attempting to link in too many shared libraries"},
	unix.ELIBEXEC:        {"ELIBEXEC", "Cannot exec a shared library directly"},
	unix.EILSEQ:          {"EILSEQ", "Invalid or incomplete multibyte or wide character"},
	unix.ERESTART:        {"ERESTART", "Interrupted system call should be restarted"},
	unix.ESTRPIPE:        {"ESTRPIPE", "Streams pipe error"},
	unix.EUSERS:          {"EUSERS", "Too many users"},
	unix.ENOTSOCK:        {"ENOTSOCK", "Socket operation on non-socket"},
	unix.EDESTADDRREQ:    {"EDESTADDRREQ", "Destination address required"},
	unix.EMSGSIZE:        {"EMSGSIZE", "Message too long"},
	unix.EPROTOTYPE:      {"EPROTOTYPE", "Protocol wrong type for socket"},
	unix.ENOPROTOOPT:     {"ENOPROTOOPT", "Protocol not available"},
	unix.EPROTONOSUPPORT: {"EPROTONOSUPPORT", "Protocol not supported"},
	unix.ESOCKTNOSUPPORT: {"ESOCKTNOSUPPORT", "Socket type not supported"},
	unix.EOPNOTSUPP:      {"EOPNOTSUPP", "Operation not supported"},
	unix.EPFNOSUPPORT:    {"EPFNOSUPPORT", "Protocol family not supported"},
	unix.EAFNOSUPPORT:    {"EAFNOSUPPORT", "Address family not supported by protocol"},
	unix.EADDRINUSE:      {"EADDRINUSE", "Address already in use"},
	unix.EADDRNOTAVAIL:   {"EADDRNOTAVAIL", "Cannot assign requested address"},
	unix.ENETDOWN:        {"ENETDOWN", "Network is down"},
	unix.ENETUNREACH:     {"ENETUNREACH", "Network is unreachable"},
	unix.ENETRESET:       {"ENETRESET", "Network dropped connection on reset"},
	unix.ECONNABORTED:    {"ECONNABORTED", "Software caused connection abort"},
	unix.ECONNRESET:      {"ECONNRESET", "Connection reset by peer"},
	unix.ENOBUFS:         {"ENOBUFS", "No buffer space available"},
	unix.EISCONN:         {"EISCONN", "Transport endpoint is already connected"},
	unix.ENOTCONN:        {"ENOTCONN", "Transport endpoint is not connected"},
	unix.ESHUTDOWN:       {"ESHUTDOWN", "Cannot send after transport endpoint shutdown"},
	unix.ETOOMANYREFS:    {"ETOOMANYREFS", "Too many references: cannot splice"},
	unix.ETIMEDOUT:       {"ETIMEDOUT", "Connection timed out"},
	unix.ECONNREFUSED:    {"ECONNREFUSED", "Connection refused"},
	unix.EHOSTDOWN:       {"EHOSTDOWN", "Host is down"},
	unix.EHOSTUNREACH:    {"EHOSTUNREACH", "No route to host"},
	unix.EALREADY:        {"EALREADY", "Operation already in progress"},
	unix.EINPROGRESS:     {"EINPROGRESS", "Operation now in progress"},
	unix.ESTALE:          {"ESTALE", "Stale file handle"},
	unix.EUCLEAN:         {"EUCLEAN", "Structure needs cleaning"},
	unix.ENOTNAM:         {"ENOTNAM", "Not a XENIX named type file"},
	unix.ENAVAIL:         {"ENAVAIL", "No XENIX semaphores available"},
	unix.EISNAM:          {"EISNAM", "Is a named type file"},
	unix.EREMOTEIO:       {"EREMOTEIO", "Remote I/O error"},
	unix.EDQUOT:          {"EDQUOT", "Disk quota exceeded"},
	unix.ENOMEDIUM:       {"ENOMEDIUM", "No medium found"},
	unix.EMEDIUMTYPE:     {"EMEDIUMTYPE", "Wrong medium type"},
	unix.ECANCELED:       {"ECANCELED", "Operation canceled"},
	unix.ENOKEY:          {"ENOKEY", "Required key not available"},
	unix.EKEYEXPIRED:     {"EKEYEXPIRED", "Key has expired"},
	unix.EKEYREVOKED:     {"EKEYREVOKED", "Key has been revoked"},
	unix.EKEYREJECTED:    {"EKEYREJECTED", "Key was rejected by service"},
	unix.EOWNERDEAD:      {"EOWNERDEAD", "Owner died"},
	unix.ENOTRECOVERABLE: {"ENOTRECOVERABLE", "State not recoverable"},
	unix.ERFKILL:         {"ERFKILL", "Operation not possible due to RF-kill"},
	unix.EHWPOISON:       {"EHWPOISON", "Memory page has hardware error"},

	// Kernel-internal (include/linux/errno.h).
	errRestartSys:          {"ERESTARTSYS", "To be restarted if SA_RESTART is set"},
	errRestartNoIntr:       {"ERESTARTNOINTR", "To be restarted"},
	errRestartNoHand:       {"ERESTARTNOHAND", "To be restarted if no handler"},
	515:                    {"ENOIOCTLCMD", "Unknown error 515"},
	errRestartRestartBlock: {"ERESTART_RESTARTBLOCK", "Interrupted by signal"},
	517:                    {"EPROBE_DEFER", "Unknown error 517"},
	518:                    {"EOPENSTALE", "Unknown error 518"},
	521:                    {"EBADHANDLE", "Unknown error 521"},
	522:                    {"ENOTSYNC", "Unknown error 522"},
	523:                    {"EBADCOOKIE", "Unknown error 523"},
	524:                    {"ENOTSUPP", "Unknown error 524"},
	525:                    {"ETOOSMALL", "Unknown error 525"},
	526:                    {"ESERVERFAULT", "Unknown error 526"},
	527:                    {"EBADTYPE", "Unknown error 527"},
	528:                    {"EJUKEBOX", "Unknown error 528"},
	529:                    {"EIOCBQUEUED", "Unknown error 529"},
	530:                    {"ERECALLCONFLICT", "Unknown error 530"},
}

func lookupErrno(e syscall.Errno) errnoText {
	if uint64(e) < uint64(len(errnoTable)) {
		return errnoTable[e]
	}
	return errnoText{}
}

// ErrnoName returns the symbolic name of an errno as strace prints it, such
// as "EBADF", or "errno 1234" for a code that has none.
func ErrnoName(e syscall.Errno) string {
	if t := lookupErrno(e); t.name != "" {
		return t.name
	}
	return string(appendUnknownErrno(nil, e))
}

// appendErrnoName is ErrnoName without allocating.
func appendErrnoName(dst []byte, e syscall.Errno) []byte {
	if t := lookupErrno(e); t.name != "" {
		return append(dst, t.name...)
	}
	return appendUnknownErrno(dst, e)
}

// appendUnknownErrno writes "errno N", strace's words for a code it cannot
// name.
func appendUnknownErrno(dst []byte, e syscall.Errno) []byte {
	return appendUint(append(dst, "errno "...), uint64(e))
}

// isRestart reports whether e is an ERESTART* code (see errRestartSys).
func isRestart(e syscall.Errno) bool {
	switch e {
	case errRestartSys, errRestartNoIntr, errRestartNoHand, errRestartRestartBlock:
		return true
	}
	return false
}

// contractErrnos are the errors sendfile(2) is documented to return (see
// "sendfile's contract" in docs/design.md), and the ERESTART* codes (see
// errRestartSys). Anything else is an unexpected_errno violation.
var contractErrnos = [...]syscall.Errno{
	unix.EAGAIN, unix.EBADF, unix.EFAULT, unix.EINVAL, unix.EIO, unix.ENOMEM,
	unix.ESPIPE, unix.EOVERFLOW, unix.EPIPE, unix.ECONNRESET, unix.EINTR,
	errRestartSys, errRestartNoIntr, errRestartNoHand, errRestartRestartBlock,
}

func inContract(e syscall.Errno) bool {
	for _, c := range contractErrnos {
		if e == c {
			return true
		}
	}
	return false
}
