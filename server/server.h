/* server/server.h — the ltdi-serve daemon as a library: create it from a
 * configuration (opens the registry, loads the start-up model), start
 * listening, and drain and stop it. server/main.c is a thin command around
 * this; tests may run the daemon in-process the same way. */
#ifndef LTDI_SERVER_SERVER_H
#define LTDI_SERVER_SERVER_H

#include <stddef.h>

#include "server/config.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ltdi_server ltdi_server;

/* Opens the registry, reads key files, starts the batcher and loads the
 * start-up model (a model that fails to load leaves the daemon running but
 * not ready; the reason goes to stderr). 0 or a negative code with err. */
int ltdi_server_create(ltdi_server **out, const ltdi_serve_config *cfg, char *err, size_t errlen);

/* Starts the HTTP listener; *port receives the bound port. */
int ltdi_server_start(ltdi_server *s, int *port, char *err, size_t errlen);

/* Stops accepting connections, lets queued and in-flight requests finish
 * (up to drain_timeout_s), then stops the listener. 0, or LTDI_ERR_IO when
 * work was still pending at the deadline. */
int ltdi_server_drain(ltdi_server *s);

void ltdi_server_free(ltdi_server *s);

#ifdef __cplusplus
}
#endif
#endif
