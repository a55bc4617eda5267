/* The batched UDP fast lane (issue 16): one recvmmsg drains up to BATCH datagrams from a
 * non-blocking UDP socket, each is handed to Python, and every reply goes out with one
 * sendmmsg to the address its query came from. Per datagram: hit(data, ip) (the wire
 * cache) and, when it answers, rate(ip, reply) (the rate limit, which may drop it); when
 * the wire cache has no answer, miss(data, addr) (the full path). None from any: no reply.
 *
 * It reads only fixed places: the datagram's length and the client's address. It never
 * looks inside a datagram. Counts and sizes are bounded: at most BATCH datagrams of at most
 * DATAGRAM bytes each per call (a longer one arrives cut, as recvfrom(65535) would cut it),
 * replies longer than DATAGRAM are not sent (sendto would fail on them with EMSGSIZE).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#define BATCH 64
#define DATAGRAM 65535

/* The message headers live on the caller's stack (about 19 KB) and the datagrams in the
 * caller's buffer (`buffer`, BATCH * DATAGRAM bytes, one per lane): nothing is shared
 * between two lanes, or two threads each running a loop with its own lane, even when a
 * handler lets another thread run. */
struct batch {
    struct mmsghdr in_msgs[BATCH];
    struct iovec in_iov[BATCH];
    struct sockaddr_storage peers[BATCH];
    struct mmsghdr out_msgs[BATCH];
    struct iovec out_iov[BATCH];
};

/* The client's address as the socket module gives it: (host, port) for IPv4 and
 * (host, port, flowinfo, scope_id) for IPv6. */
static PyObject *
address(const struct sockaddr_storage *ss, socklen_t len)
{
    char host[NI_MAXHOST];
    if (ss->ss_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
        /* Dotted quad by hand: inet_ntop formats IPv4 with sprintf, a visible cost here. */
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        const unsigned char *b = (const unsigned char *)&a->sin_addr;
        char *p = host;
        for (int i = 0; i < 4; i++) {
            unsigned int v = b[i];
            if (v >= 100)
                *p++ = (char)('0' + v / 100);
            if (v >= 10)
                *p++ = (char)('0' + v / 10 % 10);
            *p++ = (char)('0' + v % 10);
            *p++ = '.';
        }
        PyObject *ip = PyUnicode_FromStringAndSize(host, p - host - 1);
        if (ip == NULL)
            return NULL;
        PyObject *port = PyLong_FromLong(ntohs(a->sin_port));
        if (port == NULL) {
            Py_DECREF(ip);
            return NULL;
        }
        PyObject *pair = PyTuple_New(2);
        if (pair == NULL) {
            Py_DECREF(ip);
            Py_DECREF(port);
            return NULL;
        }
        PyTuple_SET_ITEM(pair, 0, ip);
        PyTuple_SET_ITEM(pair, 1, port);
        return pair;
    }
    if (ss->ss_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        if (a->sin6_scope_id == 0) {
            if (inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host) == NULL)
                return NULL;
        } else if (getnameinfo((const struct sockaddr *)a, sizeof *a, host, sizeof host, NULL,
                               0, NI_NUMERICHOST) != 0) {
            return NULL;
        }
        return Py_BuildValue("(siII)", host, ntohs(a->sin6_port),
                             (unsigned int)ntohl(a->sin6_flowinfo),
                             (unsigned int)a->sin6_scope_id);
    }
    return NULL;
}

/* Send out_msgs[0..count): one sendmmsg, again after a message the kernel refused (that one
 * is skipped, as a failed sendto would be), and no more once the socket buffer is full. */
static void
send_all(int fd, struct mmsghdr *out_msgs, unsigned int count)
{
    unsigned int done = 0;
    while (done < count) {
        int sent = sendmmsg(fd, out_msgs + done, count - done, MSG_DONTWAIT);
        if (sent > 0) {
            done += (unsigned int)sent;
            continue;
        }
        if (sent < 0 && errno == EINTR)
            continue;
        if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS))
            return;
        done += 1;
    }
}

static PyObject *
drain(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "drain(fd, buffer, hit, rate, miss, limit)");
        return NULL;
    }
    long fd = PyLong_AsLong(args[0]);
    if (fd == -1 && PyErr_Occurred())
        return NULL;
    if (fd < 0 || fd > INT_MAX) {
        PyErr_SetString(PyExc_ValueError, "bad file descriptor");
        return NULL;
    }
    PyObject *hit = args[2] == Py_None ? NULL : args[2];
    PyObject *rate = args[3] == Py_None ? NULL : args[3];
    PyObject *miss = args[4];
    long limit = PyLong_AsLong(args[5]);
    if (limit == -1 && PyErr_Occurred())
        return NULL;
    if (limit < 1 || limit > BATCH) {
        PyErr_Format(PyExc_ValueError, "limit must be 1..%d", BATCH);
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[1], &view, PyBUF_WRITABLE) < 0)
        return NULL;
    if (view.len < (Py_ssize_t)BATCH * DATAGRAM) {
        PyBuffer_Release(&view);
        PyErr_Format(PyExc_ValueError, "buffer must hold %d bytes", BATCH * DATAGRAM);
        return NULL;
    }
    char *buffers = view.buf;
    struct batch b;
    struct mmsghdr *in_msgs = b.in_msgs, *out_msgs = b.out_msgs;
    struct iovec *in_iov = b.in_iov, *out_iov = b.out_iov;
    struct sockaddr_storage *peers = b.peers;
    for (long i = 0; i < limit; i++) {
        in_iov[i].iov_base = buffers + (size_t)i * DATAGRAM;
        in_iov[i].iov_len = DATAGRAM;
        memset(&in_msgs[i].msg_hdr, 0, sizeof in_msgs[i].msg_hdr);
        in_msgs[i].msg_hdr.msg_iov = &in_iov[i];
        in_msgs[i].msg_hdr.msg_iovlen = 1;
        in_msgs[i].msg_hdr.msg_name = &peers[i];
        in_msgs[i].msg_hdr.msg_namelen = sizeof peers[i];
    }
    /* Both calls never block (MSG_DONTWAIT): the GIL stays held around them. */
    int got;
    do {
        got = recvmmsg((int)fd, in_msgs, (unsigned int)limit, MSG_DONTWAIT, NULL);
    } while (got < 0 && errno == EINTR);
    if (got < 0) {
        PyBuffer_Release(&view);
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return PyLong_FromLong(0);
        return PyErr_SetFromErrno(PyExc_OSError);
    }

    PyObject *replies[BATCH];
    unsigned int out = 0;
    int failed = 0;
    for (int i = 0; i < got; i++) {
        PyObject *addr = address(&peers[i], in_msgs[i].msg_hdr.msg_namelen);
        if (addr == NULL) {
            PyErr_Clear();  /* not an inet address: nothing to answer */
            continue;
        }
        size_t len = in_msgs[i].msg_len > DATAGRAM ? DATAGRAM : in_msgs[i].msg_len;
        PyObject *data = PyBytes_FromStringAndSize(in_iov[i].iov_base, (Py_ssize_t)len);
        if (data == NULL) {
            Py_DECREF(addr);
            failed = 1;
            break;
        }
        PyObject *reply = NULL;
        PyObject *ip = PyTuple_GET_ITEM(addr, 0);
        if (hit != NULL) {
            PyObject *call[2] = {data, ip};
            reply = PyObject_Vectorcall(hit, call, 2, NULL);
            if (reply == Py_None) {
                Py_DECREF(reply);
                reply = NULL;
            } else if (reply != NULL && rate != NULL) {
                PyObject *limited[2] = {ip, reply};
                PyObject *kept = PyObject_Vectorcall(rate, limited, 2, NULL);
                Py_DECREF(reply);
                if (kept == NULL) {
                    Py_DECREF(data);
                    Py_DECREF(addr);
                    failed = 1;
                    break;
                }
                reply = kept;  /* None: dropped by the rate limit, not sent below */
            } else if (reply == NULL) {
                Py_DECREF(data);
                Py_DECREF(addr);
                failed = 1;
                break;
            }
        }
        if (reply == NULL) {
            PyObject *call[2] = {data, addr};
            reply = PyObject_Vectorcall(miss, call, 2, NULL);
        }
        Py_DECREF(data);
        Py_DECREF(addr);
        if (reply == NULL) {
            failed = 1;
            break;
        }
        if (!PyBytes_CheckExact(reply) || PyBytes_GET_SIZE(reply) > DATAGRAM) {
            Py_DECREF(reply);
            continue;
        }
        out_iov[out].iov_base = PyBytes_AS_STRING(reply);
        out_iov[out].iov_len = (size_t)PyBytes_GET_SIZE(reply);
        memset(&out_msgs[out].msg_hdr, 0, sizeof out_msgs[out].msg_hdr);
        out_msgs[out].msg_hdr.msg_iov = &out_iov[out];
        out_msgs[out].msg_hdr.msg_iovlen = 1;
        out_msgs[out].msg_hdr.msg_name = &peers[i];
        out_msgs[out].msg_hdr.msg_namelen = in_msgs[i].msg_hdr.msg_namelen;
        replies[out++] = reply;
    }
    if (out > 0)
        send_all((int)fd, out_msgs, out);
    PyBuffer_Release(&view);
    for (unsigned int i = 0; i < out; i++)
        Py_DECREF(replies[i]);
    if (failed)
        return NULL;  /* the handler's exception, after the replies before it went out */
    return PyLong_FromLong(got);
}

static PyMethodDef methods[] = {
    {"drain", (PyCFunction)(void (*)(void))drain, METH_FASTCALL,
     "drain(fd, buffer, hit, rate, miss, limit) -> int: receive up to limit datagrams "
     "(into buffer, a writable BATCH * DATAGRAM bytes) with one "
     "recvmmsg; for each, reply = hit(data, ip), then rate(ip, reply) if hit answered, "
     "else miss(data, addr) (hit and rate may be None); send the replies with one sendmmsg."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "globaldns.dns._fastlane",
    "The batched UDP receive and send (recvmmsg/sendmmsg) of the fast lane.", -1, methods,
};

PyMODINIT_FUNC
PyInit__fastlane(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && (PyModule_AddIntConstant(m, "BATCH", BATCH) < 0
                      || PyModule_AddIntConstant(m, "DATAGRAM", DATAGRAM) < 0)) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
