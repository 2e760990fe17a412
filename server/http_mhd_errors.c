/* server/http_mhd_errors.c — the errors libmicrohttpd answers by itself,
 * in the contract's error shape.
 *
 * Some requests never reach a handler: libmicrohttpd rejects them while
 * reading the head or the chunked framing (a request line or head too big
 * for the connection's memory: 414/431; a malformed Content-Length, chunk
 * size or header line, or a missing Host: 400; a chunk too large: 413; an
 * HTTP version it does not speak: 505) and answers with an HTML page. It
 * has no hook for those bodies, but it queues them through its exported
 * MHD_queue_response, called through the library's PLT. This file defines
 * that symbol in the daemon, so the dynamic linker binds the library's
 * call here (the executable comes first in symbol lookup); the definition
 * answers with a JSON error of the same status instead. The daemon's own responses call ltdi__http_queue, which goes to
 * the real function directly. tests/integration/serve_hardening.c sends
 * each of these requests, so a libmicrohttpd build that binds the call
 * inside the library (and would send HTML again) fails a test. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdlib.h>

#include "server/http_guard.h"
#include "server/server_internal.h"

typedef enum MHD_Result (*queue_fn)(struct MHD_Connection *, unsigned int, struct MHD_Response *);

static queue_fn g_real_queue;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void find_real(void) {
  /* Converting dlsym's object pointer to a function pointer is what POSIX
   * requires dlsym to support. */
  *(void **)&g_real_queue = dlsym(RTLD_NEXT, "MHD_queue_response");
}

static queue_fn real_queue(void) {
  pthread_once(&g_once, find_real);
  return g_real_queue;
}

int ltdi__http_queue(struct MHD_Connection *conn, unsigned int status, struct MHD_Response *r) {
  queue_fn q = real_queue();
  return q ? (int)q(conn, status, r) : (int)MHD_NO;
}

static const char *what_failed(unsigned int status) {
  switch (status) {
  case 400: return "malformed request (request line, header, Content-Length, chunked framing or Host)";
  case 413: return "a request chunk is too large";
  case 414: return "the request line is too long";
  case 431: return "the request header fields are too large";
  case 505: return "HTTP version not supported (HTTP/1.0 and HTTP/1.1 are)";
  default: return "the request could not be processed";
  }
}

/* Reached only from libmicrohttpd itself, for the answers it makes. An
 * error is written to the socket here, and the library is told that
 * queueing failed, so it only closes the connection. (Queueing a JSON
 * response instead would not do: after a malformed Content-Length or a
 * missing Host, libmicrohttpd 0.9.75 goes on to build the response head a
 * second time, and the client reads two heads.) */
enum MHD_Result MHD_queue_response(struct MHD_Connection *conn, unsigned int status,
                                   struct MHD_Response *response) {
  queue_fn q = real_queue();
  if (!q) return MHD_NO;
  const union MHD_ConnectionInfo *fd =
      MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
  if (status < 400 || !fd) return q(conn, status, response);
  ltdi_conn_send_error(fd->connect_fd, (int)status, what_failed(status));
  const union MHD_ConnectionInfo *ci =
      MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
  ltdi_server *s = ci ? ltdi_conn_owner(ci->socket_context) : NULL;
  if (s) ltdi_metrics_request(s->metrics, "(malformed request)", (int)status, 0.0);
  return MHD_NO;
}
