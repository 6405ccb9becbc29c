/*
 * Preflight check of the RDMA ports through libibverbs, in ibstat's terms:
 * state, link layer, width and speed.  Ranks on different hosts exchange
 * tokens over these; without one they fall back to TCP.
 */
#include <errno.h>
#include <infiniband/verbs.h>
#include <stdio.h>
#include <string.h>

#include "runner/preflight.h"

static const char *state_name(enum ibv_port_state state)
{
    switch (state) {
    case IBV_PORT_NOP: return "NOP";
    case IBV_PORT_DOWN: return "DOWN";
    case IBV_PORT_INIT: return "INIT";
    case IBV_PORT_ARMED: return "ARMED";
    case IBV_PORT_ACTIVE: return "ACTIVE";
    case IBV_PORT_ACTIVE_DEFER: return "ACTIVE_DEFER";
    }
    return "unknown state";
}

static void check_port(mr_preflight *pf, struct ibv_context *ctx, const char *device,
                       unsigned port)
{
    struct ibv_port_attr attr;
    int rc = ibv_query_port(ctx, (uint8_t)port, &attr);
    if (rc != 0) {
        mr_preflight_say(pf, MR_PREFLIGHT_WARN, "rdma", "%s port %u: ibv_query_port: %s",
                         device, port, strerror(rc));
        return;
    }
    const char *layer = attr.link_layer == IBV_LINK_LAYER_ETHERNET ? "Ethernet" : "InfiniBand";
    if (attr.state != IBV_PORT_ACTIVE) {
        mr_preflight_say(pf, MR_PREFLIGHT_WARN, "rdma", "%s port %u: %s, %s", device, port,
                         state_name(attr.state), layer);
        return;
    }
    mr_preflight_link link;
    char rate[64];
    if (mr_preflight_link_rate(attr.active_width, attr.active_speed, &link) == 0)
        snprintf(rate, sizeof rate, "%s %s (%g Gb/s)", link.width, link.speed,
                 (double)link.mbps / 1000);
    else
        snprintf(rate, sizeof rate, "width code %u, speed code %u", attr.active_width,
                 attr.active_speed);
    mr_preflight_say(pf, MR_PREFLIGHT_OK, "rdma", "%s port %u: ACTIVE, %s, %s", device, port,
                     layer, rate);
}

static void check_device(mr_preflight *pf, struct ibv_device *device)
{
    const char *name = ibv_get_device_name(device);
    struct ibv_context *ctx = ibv_open_device(device);
    if (!ctx) {
        mr_preflight_say(pf, MR_PREFLIGHT_WARN, "rdma", "%s: ibv_open_device: %s", name,
                         strerror(errno));
        return;
    }
    struct ibv_device_attr attr;
    int rc = ibv_query_device(ctx, &attr);
    if (rc != 0)
        mr_preflight_say(pf, MR_PREFLIGHT_WARN, "rdma", "%s: ibv_query_device: %s", name,
                         strerror(rc));
    else
        for (unsigned port = 1; port <= attr.phys_port_cnt; port++)
            check_port(pf, ctx, name, port);
    ibv_close_device(ctx);
}

void mr_preflight_rdma(mr_preflight *pf)
{
    int n = 0;
    struct ibv_device **devices = ibv_get_device_list(&n);
    if (!devices || n == 0) {
        mr_preflight_say(pf, MR_PREFLIGHT_WARN, "rdma",
                         "no RDMA device (ibv_get_device_list: %s); inter-host traffic "
                         "will go over TCP",
                         devices ? "none listed" : strerror(errno));
        if (devices)
            ibv_free_device_list(devices);
        return;
    }
    for (int i = 0; i < n; i++)
        check_device(pf, devices[i]);
    ibv_free_device_list(devices);
}
