/* The shim the launcher preloads (LD_PRELOAD) into every task. Two jobs:
 *
 * 1. Listen on the task's own address instead of every interface.
 *    TensorFlow's gRPC server (grpc_server_lib.cc) and TFF's worker_binary bind
 *    "0.0.0.0:<port>" (or "[::]:<port>") whatever TF_CONFIG says, so a TF task is
 *    reachable on every interface of its machine. With TFDIST_BIND_ADDRESS set to
 *    the host of the task's own address, this bind() turns a wildcard bind into a
 *    bind to that address:
 *      AF_INET  0.0.0.0  -> the IPv4 address
 *      AF_INET6 ::       -> the IPv6 address, or ::ffff:a.b.c.d for an IPv4 one
 *                           (gRPC's dual-stack socket then listens on that only)
 *    Non-wildcard binds, other families and unset/unresolvable addresses pass
 *    through unchanged.
 *
 * 2. Count the bytes the process moves over TCP: payload bytes through send,
 *    sendto, sendmsg, write, writev (sent) and recv, recvfrom, recvmsg, read, readv
 *    (received) on the TCP sockets it created or accepted (AF_INET/AF_INET6,
 *    SOCK_STREAM; loopback included). That is what gRPC hands the kernel: message
 *    payload plus HTTP/2 and gRPC framing, headers and every control RPC; TCP/IP
 *    headers are not counted. With TFDIST_TRAFFIC_DIR set, the counters go to
 *    <dir>/<TFDIST_TASK>.<pid>.json at most every 0.5 s from inside a counted call,
 *    by a flusher thread within 0.5 s of the last count (a process killed by a signal,
 *    like worker_binary at the end of a job, runs no exit handler), and at exit. A forked child starts from zero; an exec'd one (worker_binary)
 *    loads the shim afresh, under its own pid. launch/traffic.py reads the files.
 *    Without TFDIST_TRAFFIC_DIR nothing is written; tfdist_traffic() still answers.
 *    A connection to a loopback port listed in TFDIST_UNCOUNTED_PORTS (read at each
 *    connect; e.g. "41234,41235") is not counted: host-local plumbing such as the
 *    FedAvg chief's own merge service, which is no network traffic.
 *
 * Built by `make venv` (or on first use) with the system cc.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <netdb.h>
#include <netinet/in.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

typedef int (*bind_fn)(int, const struct sockaddr *, socklen_t);

static pthread_once_t once = PTHREAD_ONCE_INIT;
static bind_fn real_bind;
static int have4, have6;
static struct in_addr addr4;
static struct in6_addr addr6;

static void init(void) {
  real_bind = (bind_fn)dlsym(RTLD_NEXT, "bind");
  const char *host = getenv("TFDIST_BIND_ADDRESS");
  if (!host || !*host) return;
  if (inet_pton(AF_INET, host, &addr4) == 1) { have4 = 1; return; }
  if (inet_pton(AF_INET6, host, &addr6) == 1) { have6 = 1; return; }
  struct addrinfo hints, *res = NULL;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  if (getaddrinfo(host, NULL, &hints, &res) != 0) return;
  for (struct addrinfo *p = res; p; p = p->ai_next) { /* prefer IPv4 */
    if (p->ai_family == AF_INET && !have4) {
      addr4 = ((struct sockaddr_in *)p->ai_addr)->sin_addr; have4 = 1;
    }
  }
  for (struct addrinfo *p = res; p && !have4; p = p->ai_next) {
    if (p->ai_family == AF_INET6) {
      addr6 = ((struct sockaddr_in6 *)p->ai_addr)->sin6_addr; have6 = 1; break;
    }
  }
  freeaddrinfo(res);
}

int bind(int fd, const struct sockaddr *sa, socklen_t len) {
  pthread_once(&once, init);
  if (sa && sa->sa_family == AF_INET && len >= sizeof(struct sockaddr_in) && have4) {
    struct sockaddr_in in = *(const struct sockaddr_in *)sa;
    if (in.sin_addr.s_addr == htonl(INADDR_ANY)) {
      in.sin_addr = addr4;
      return real_bind(fd, (const struct sockaddr *)&in, sizeof in);
    }
  } else if (sa && sa->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6) &&
             (have4 || have6)) {
    struct sockaddr_in6 in6 = *(const struct sockaddr_in6 *)sa;
    if (IN6_IS_ADDR_UNSPECIFIED(&in6.sin6_addr)) {
      if (have6) {
        in6.sin6_addr = addr6;
      } else { /* IPv4-mapped: the dual-stack socket accepts on the IPv4 address only */
        memset(&in6.sin6_addr, 0, sizeof in6.sin6_addr);
        in6.sin6_addr.s6_addr[10] = 0xff;
        in6.sin6_addr.s6_addr[11] = 0xff;
        memcpy(&in6.sin6_addr.s6_addr[12], &addr4, 4);
      }
      return real_bind(fd, (const struct sockaddr *)&in6, sizeof in6);
    }
  }
  return real_bind(fd, sa, len);
}


/* ---- 2. byte counting ------------------------------------------------------ */

#define MAX_FD 65536
static unsigned char is_tcp[MAX_FD];          /* fd -> 1 while it is a counted socket */
static uint64_t sent_bytes, received_bytes;   /* atomics */
static int64_t last_dump_ns;                  /* atomic */
static pthread_mutex_t dump_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t io_once = PTHREAD_ONCE_INIT;
static char dump_path[4096];

typedef int (*socket_fn)(int, int, int);
typedef int (*connect_fn)(int, const struct sockaddr *, socklen_t);
typedef int (*accept_fn)(int, struct sockaddr *, socklen_t *);
typedef int (*accept4_fn)(int, struct sockaddr *, socklen_t *, int);
typedef int (*close_fn)(int);
typedef ssize_t (*send_fn)(int, const void *, size_t, int);
typedef ssize_t (*sendto_fn)(int, const void *, size_t, int, const struct sockaddr *, socklen_t);
typedef ssize_t (*sendmsg_fn)(int, const struct msghdr *, int);
typedef ssize_t (*write_fn)(int, const void *, size_t);
typedef ssize_t (*writev_fn)(int, const struct iovec *, int);
typedef ssize_t (*recv_fn)(int, void *, size_t, int);
typedef ssize_t (*recvfrom_fn)(int, void *, size_t, int, struct sockaddr *, socklen_t *);
typedef ssize_t (*recvmsg_fn)(int, struct msghdr *, int);
typedef ssize_t (*read_fn)(int, void *, size_t);
typedef ssize_t (*readv_fn)(int, const struct iovec *, int);

static socket_fn real_socket;
static connect_fn real_connect;
static accept_fn real_accept;
static accept4_fn real_accept4;
static close_fn real_close;
static send_fn real_send;
static sendto_fn real_sendto;
static sendmsg_fn real_sendmsg;
static write_fn real_write;
static writev_fn real_writev;
static recv_fn real_recv;
static recvfrom_fn real_recvfrom;
static recvmsg_fn real_recvmsg;
static read_fn real_read;
static readv_fn real_readv;

static void set_dump_path(void) {
  const char *dir = getenv("TFDIST_TRAFFIC_DIR");
  const char *task = getenv("TFDIST_TASK");
  dump_path[0] = 0;
  if (dir && *dir)
    snprintf(dump_path, sizeof dump_path, "%s/%s.%ld.json", dir, task && *task ? task : "task",
             (long)getpid());
}

static int flusher_started, dirty;  /* atomics */

static void after_fork_child(void) {
  __atomic_store_n(&sent_bytes, 0, __ATOMIC_RELAXED);
  __atomic_store_n(&received_bytes, 0, __ATOMIC_RELAXED);
  __atomic_store_n(&flusher_started, 0, __ATOMIC_RELAXED);  /* threads do not fork */
  __atomic_store_n(&dirty, 0, __ATOMIC_RELAXED);
  set_dump_path();
}

static void dump(void);

static void io_init(void) {
  real_socket = (socket_fn)dlsym(RTLD_NEXT, "socket");
  real_connect = (connect_fn)dlsym(RTLD_NEXT, "connect");
  real_accept = (accept_fn)dlsym(RTLD_NEXT, "accept");
  real_accept4 = (accept4_fn)dlsym(RTLD_NEXT, "accept4");
  real_close = (close_fn)dlsym(RTLD_NEXT, "close");
  real_send = (send_fn)dlsym(RTLD_NEXT, "send");
  real_sendto = (sendto_fn)dlsym(RTLD_NEXT, "sendto");
  real_sendmsg = (sendmsg_fn)dlsym(RTLD_NEXT, "sendmsg");
  real_write = (write_fn)dlsym(RTLD_NEXT, "write");
  real_writev = (writev_fn)dlsym(RTLD_NEXT, "writev");
  real_recv = (recv_fn)dlsym(RTLD_NEXT, "recv");
  real_recvfrom = (recvfrom_fn)dlsym(RTLD_NEXT, "recvfrom");
  real_recvmsg = (recvmsg_fn)dlsym(RTLD_NEXT, "recvmsg");
  real_read = (read_fn)dlsym(RTLD_NEXT, "read");
  real_readv = (readv_fn)dlsym(RTLD_NEXT, "readv");
  set_dump_path();
  pthread_atfork(NULL, NULL, after_fork_child);
}

__attribute__((constructor)) static void shim_load(void) { pthread_once(&io_once, io_init); }
__attribute__((destructor)) static void shim_unload(void) { dump(); }

#define IO_INIT() pthread_once(&io_once, io_init)
#define TRACKED(fd) ((fd) >= 0 && (fd) < MAX_FD && is_tcp[(fd)])

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Writes the counters with the real write/close (never counted: not a socket). */
static void dump(void) {
  if (!dump_path[0] || !real_write) return;
  pthread_mutex_lock(&dump_lock);
  char tmp[4200], body[256];
  snprintf(tmp, sizeof tmp, "%s.tmp", dump_path);
  int n = snprintf(body, sizeof body, "{\"pid\": %ld, \"sent\": %llu, \"received\": %llu}\n",
                   (long)getpid(),
                   (unsigned long long)__atomic_load_n(&sent_bytes, __ATOMIC_RELAXED),
                   (unsigned long long)__atomic_load_n(&received_bytes, __ATOMIC_RELAXED));
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd >= 0) {
    int ok = real_write(fd, body, (size_t)n) == n;
    real_close(fd);
    if (ok) rename(tmp, dump_path); else unlink(tmp);
  }
  pthread_mutex_unlock(&dump_lock);
}

/* Writes the counters every 0.5 s while they have changed since the last write. */
static void *flusher(void *arg) {
  (void)arg;
  for (;;) {
    struct timespec ts = {0, 500000000};
    nanosleep(&ts, NULL);
    if (__atomic_exchange_n(&dirty, 0, __ATOMIC_RELAXED)) dump();
  }
  return NULL;
}

static void count(uint64_t *counter, ssize_t n) {
  if (n <= 0) return;
  __atomic_fetch_add(counter, (uint64_t)n, __ATOMIC_RELAXED);
  if (!dump_path[0]) return;
  __atomic_store_n(&dirty, 1, __ATOMIC_RELAXED);
  int expected = 0;
  if (__atomic_compare_exchange_n(&flusher_started, &expected, 1, 0, __ATOMIC_RELAXED,
                                  __ATOMIC_RELAXED)) {
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_create(&t, &attr, flusher, NULL);
    pthread_attr_destroy(&attr);
  }
  int64_t now = now_ns(), last = __atomic_load_n(&last_dump_ns, __ATOMIC_RELAXED);
  if (now - last > 500000000 &&
      __atomic_compare_exchange_n(&last_dump_ns, &last, now, 0, __ATOMIC_RELAXED,
                                  __ATOMIC_RELAXED))
    dump();
}

static void track(int fd, int on) {
  if (fd >= 0 && fd < MAX_FD) __atomic_store_n(&is_tcp[fd], (unsigned char)on, __ATOMIC_RELAXED);
}

/* Public: the counters so far (a trainer reads them with ctypes). */
void tfdist_traffic(uint64_t *sent, uint64_t *received) {
  *sent = __atomic_load_n(&sent_bytes, __ATOMIC_RELAXED);
  *received = __atomic_load_n(&received_bytes, __ATOMIC_RELAXED);
}

int socket(int domain, int type, int protocol) {
  IO_INIT();
  int fd = real_socket(domain, type, protocol);
  if (fd >= 0)
    track(fd, (domain == AF_INET || domain == AF_INET6) && (type & 0xf) == SOCK_STREAM);
  return fd;
}

/* A loopback peer on a port listed in TFDIST_UNCOUNTED_PORTS. */
static int uncounted(const struct sockaddr *sa, socklen_t len) {
  const char *ports = getenv("TFDIST_UNCOUNTED_PORTS");
  if (!sa || !ports || !*ports) return 0;
  int port;
  if (sa->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
    const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
    if ((ntohl(in->sin_addr.s_addr) >> 24) != 127) return 0;
    port = ntohs(in->sin_port);
  } else if (sa->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
    if (!IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr) &&
        !(IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr) && in6->sin6_addr.s6_addr[12] == 127))
      return 0;
    port = ntohs(in6->sin6_port);
  } else {
    return 0;
  }
  for (const char *p = ports; *p;) {
    char *end;
    long v = strtol(p, &end, 10);
    if (end == p) break;
    if (v == port) return 1;
    p = *end == ',' ? end + 1 : end;
    if (*end != ',') break;
  }
  return 0;
}

int connect(int fd, const struct sockaddr *sa, socklen_t len) {
  IO_INIT();
  if (TRACKED(fd) && uncounted(sa, len)) track(fd, 0);
  return real_connect(fd, sa, len);
}

int accept(int fd, struct sockaddr *sa, socklen_t *len) {
  IO_INIT();
  int c = real_accept(fd, sa, len);
  if (c >= 0) track(c, TRACKED(fd));
  return c;
}

int accept4(int fd, struct sockaddr *sa, socklen_t *len, int flags) {
  IO_INIT();
  int c = real_accept4(fd, sa, len, flags);
  if (c >= 0) track(c, TRACKED(fd));
  return c;
}

int close(int fd) {
  IO_INIT();
  track(fd, 0);
  return real_close(fd);
}

ssize_t send(int fd, const void *buf, size_t len, int flags) {
  IO_INIT();
  ssize_t n = real_send(fd, buf, len, flags);
  if (TRACKED(fd)) count(&sent_bytes, n);
  return n;
}

ssize_t sendto(int fd, const void *buf, size_t len, int flags, const struct sockaddr *sa,
               socklen_t alen) {
  IO_INIT();
  ssize_t n = real_sendto(fd, buf, len, flags, sa, alen);
  if (TRACKED(fd)) count(&sent_bytes, n);
  return n;
}

ssize_t sendmsg(int fd, const struct msghdr *msg, int flags) {
  IO_INIT();
  ssize_t n = real_sendmsg(fd, msg, flags);
  if (TRACKED(fd)) count(&sent_bytes, n);
  return n;
}

ssize_t write(int fd, const void *buf, size_t len) {
  IO_INIT();
  ssize_t n = real_write(fd, buf, len);
  if (TRACKED(fd)) count(&sent_bytes, n);
  return n;
}

ssize_t writev(int fd, const struct iovec *iov, int cnt) {
  IO_INIT();
  ssize_t n = real_writev(fd, iov, cnt);
  if (TRACKED(fd)) count(&sent_bytes, n);
  return n;
}

ssize_t recv(int fd, void *buf, size_t len, int flags) {
  IO_INIT();
  ssize_t n = real_recv(fd, buf, len, flags);
  if (TRACKED(fd) && !(flags & MSG_PEEK)) count(&received_bytes, n);
  return n;
}

ssize_t recvfrom(int fd, void *buf, size_t len, int flags, struct sockaddr *sa,
                 socklen_t *alen) {
  IO_INIT();
  ssize_t n = real_recvfrom(fd, buf, len, flags, sa, alen);
  if (TRACKED(fd) && !(flags & MSG_PEEK)) count(&received_bytes, n);
  return n;
}

ssize_t recvmsg(int fd, struct msghdr *msg, int flags) {
  IO_INIT();
  ssize_t n = real_recvmsg(fd, msg, flags);
  if (TRACKED(fd) && !(flags & (MSG_PEEK | MSG_ERRQUEUE))) count(&received_bytes, n);
  return n;
}

ssize_t read(int fd, void *buf, size_t len) {
  IO_INIT();
  ssize_t n = real_read(fd, buf, len);
  if (TRACKED(fd)) count(&received_bytes, n);
  return n;
}

ssize_t readv(int fd, const struct iovec *iov, int cnt) {
  IO_INIT();
  ssize_t n = real_readv(fd, iov, cnt);
  if (TRACKED(fd)) count(&received_bytes, n);
  return n;
}
