#ifndef CANARY_CLIBNLGENL_SHIM_H
#define CANARY_CLIBNLGENL_SHIM_H
// libnl-3 + libnl-genl-3: used to resolve generic netlink families by name.
#include <netinet/in.h>
#include <net/if.h>
#include <netlink/netlink.h>
#include <netlink/genl/genl.h>
#include <netlink/genl/ctrl.h>
#include <netlink/errno.h>
#endif
