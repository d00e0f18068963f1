/*
 * What the lwIP agent needs of lwIP beyond its socket API, written in C
 * because it touches lwIP's own structures (struct netif, struct tcp_pcb),
 * whose layout only lwIP's headers know:
 *
 * - td_lwip_start: lwIP's thread, and one Ethernet interface on a packet
 *   socket the caller opened (frames in on a reader thread, out by send);
 * - td_lwip_pcbs: the TCP protocol control blocks of every list (listen,
 *   bound, active, TIME-WAIT), with the timer each runs, read under
 *   lwIP's core lock.
 *
 * Built against Debian's liblwip-dev (lwIP 2.1, its lwipopts.h: NO_SYS 0,
 * core locking, glibc's socket headers, so option names and errno values
 * are Linux's).
 */
#include <lwip/opt.h>
#include <lwip/tcpip.h>
#include <lwip/netif.h>
#include <lwip/etharp.h>
#include <lwip/ethip6.h>
#include <lwip/nd6.h>
#include <lwip/priv/tcp_priv.h>
#include <lwip/priv/sockets_priv.h>
#include <lwip/api.h>
#include <netif/ethernet.h>

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <linux/if_packet.h>

/* The longest frame the interface takes or gives: the link's MTU and an
 * Ethernet header (offloads are off on the bench's links). */
#define TD_FRAME 1514

static struct netif td_netif;
static int td_packet_fd = -1;
static unsigned char td_mac[6];

static err_t td_linkoutput(struct netif *netif, struct pbuf *p) {
  unsigned char frame[TD_FRAME];
  (void)netif;
  if (p->tot_len > sizeof frame) {
    return ERR_BUF;
  }
  u16_t len = pbuf_copy_partial(p, frame, p->tot_len, 0);
  return send(td_packet_fd, frame, len, 0) == (ssize_t)len ? ERR_OK : ERR_IF;
}

static err_t td_netif_init(struct netif *netif) {
  netif->name[0] = 't';
  netif->name[1] = 'd';
  netif->output = etharp_output;
  netif->output_ip6 = ethip6_output;
  netif->linkoutput = td_linkoutput;
  netif->mtu = 1500;
  netif->hwaddr_len = 6;
  memcpy(netif->hwaddr, td_mac, 6);
  netif->flags = NETIF_FLAG_BROADCAST | NETIF_FLAG_ETHARP | NETIF_FLAG_ETHERNET |
                 NETIF_FLAG_MLD6 | NETIF_FLAG_LINK_UP | NETIF_FLAG_IGMP;
  return ERR_OK;
}

/* Frames from the link into lwIP, until the socket fails. Frames this
 * host's kernel sends out of the interface (PACKET_OUTGOING) are not
 * lwIP's to see. */
static void *td_reader(void *arg) {
  unsigned char frame[TD_FRAME + 64];
  (void)arg;
  for (;;) {
    struct sockaddr_ll from;
    socklen_t len = sizeof from;
    ssize_t n = recvfrom(td_packet_fd, frame, sizeof frame, 0, (struct sockaddr *)&from, &len);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      return NULL;
    }
    if (from.sll_pkttype == PACKET_OUTGOING || n > TD_FRAME) {
      continue;
    }
    /* One contiguous buffer (PBUF_RAM): the packaged build's pool buffers
     * are smaller than its headers say, and pbuf_take overruns a chain of
     * them (seen with valgrind). */
    struct pbuf *p = pbuf_alloc(PBUF_RAW, (u16_t)n, PBUF_RAM);
    if (p == NULL) {
      continue;
    }
    pbuf_take(p, frame, (u16_t)n);
    if (td_netif.input(p, &td_netif) != ERR_OK) {
      pbuf_free(p);
    }
  }
}

static void td_started(void *arg) { sys_sem_signal((sys_sem_t *)arg); }

/*
 * Starts lwIP on the packet socket `packet_fd` (bound to one interface)
 * with the hardware address `mac`: IPv4 `ip4`/`prefix4` via `gw4` (network
 * order; 0 for none), and IPv6 `ip6`/`prefix6` if `ip6` is not NULL (a
 * link-local address is made from `mac`). Returns 0, or -1 with errno.
 */
int td_lwip_start(int packet_fd, const unsigned char *mac, uint32_t ip4, uint8_t prefix4,
                  uint32_t gw4, const unsigned char *ip6, uint8_t prefix6) {
  sys_sem_t started;
  pthread_t reader;
  ip4_addr_t addr, mask, gw;
  (void)prefix6;

  td_packet_fd = packet_fd;
  memcpy(td_mac, mac, 6);
  if (sys_sem_new(&started, 0) != ERR_OK) {
    errno = ENOMEM;
    return -1;
  }
  tcpip_init(td_started, &started);
  sys_sem_wait(&started);
  sys_sem_free(&started);

  ip4_addr_set_u32(&addr, ip4);
  ip4_addr_set_u32(&mask, prefix4 == 0 ? 0 : lwip_htonl(0xffffffffUL << (32 - prefix4)));
  ip4_addr_set_u32(&gw, gw4);
  LOCK_TCPIP_CORE();
  struct netif *added = netif_add(&td_netif, &addr, &mask, &gw, NULL, td_netif_init, tcpip_input);
  if (added != NULL) {
    netif_set_default(&td_netif);
    if (ip6 != NULL) {
      ip6_addr_t a6;
      s8_t index = -1;
      memcpy(&a6.addr, ip6, 16);
      ip6_addr_clear_zone(&a6);
      netif_create_ip6_linklocal_address(&td_netif, 1);
      if (netif_add_ip6_address(&td_netif, &a6, &index) == ERR_OK && index >= 0) {
        /* The bench's addresses are its own: no duplicate to detect. */
        netif_ip6_addr_set_state(&td_netif, index, IP6_ADDR_PREFERRED);
      }
      netif_ip6_addr_set_state(&td_netif, 0, IP6_ADDR_PREFERRED);
    }
    netif_set_up(&td_netif);
  }
  UNLOCK_TCPIP_CORE();
  if (added == NULL) {
    errno = EINVAL;
    return -1;
  }
  if (pthread_create(&reader, NULL, td_reader, NULL) != 0) {
    errno = EAGAIN;
    return -1;
  }
  pthread_detach(reader);
  return 0;
}

/* One protocol control block, as the agent reports it. */
struct td_pcb {
  /* The control block's address: its identity while it lives. */
  uintptr_t id;
  /* enum tcp_state: CLOSED 0 ... TIME_WAIT 10 */
  int state;
  int v6;
  unsigned char local[16];
  unsigned char remote[16];
  uint16_t local_port;
  uint16_t remote_port;
  /* Bytes received and not yet taken by the application (the receive
   * window they hold); listeners: 0, their waiting connections being in
   * the netconn's mailbox, out of sight (see sees_accept_queue). */
  uint32_t recv_queue;
  /* Bytes queued and not yet acknowledged; listeners: 0. */
  uint32_t send_queue;
  /* The timer that runs, as sock_diag would name it (TD_TIMER_*), and
   * the milliseconds left on it. */
  int timer;
  uint32_t timer_ms;
};

#define TD_TIMER_NONE 0
#define TD_TIMER_RETRANSMIT 1
#define TD_TIMER_KEEPALIVE 2
#define TD_TIMER_TIME_WAIT 3
#define TD_TIMER_PERSIST 4

/* lwIP 2.1's persist backoff, in slow ticks (tcp.c's tcp_persist_backoff,
 * which is static there). */
static const u8_t td_persist_backoff[] = {3, 6, 12, 24, 48, 96, 120};

/* Milliseconds from `held` slow ticks to `due` slow ticks; 0 if past. */
static uint32_t td_left(uint32_t held, uint32_t due) {
  return held >= due ? 0 : (due - held) * TCP_SLOW_INTERVAL;
}

/* The timer tcp_slowtmr will act on next, in the order Linux's sock_diag
 * reports them: TIME-WAIT, retransmission (data or a FIN, SYN unacked),
 * the persist timer (zero-window probes), keep-alive. */
static void td_timer(struct td_pcb *out, const struct tcp_pcb *p) {
  uint32_t held = tcp_ticks - p->tmr;
  if (p->state == TIME_WAIT) {
    out->timer = TD_TIMER_TIME_WAIT;
    out->timer_ms = td_left(held, 2 * TCP_MSL / TCP_SLOW_INTERVAL);
  } else if (p->unacked != NULL && p->rtime >= 0) {
    out->timer = TD_TIMER_RETRANSMIT;
    out->timer_ms = td_left((uint32_t)p->rtime, (uint32_t)(p->rto > 0 ? p->rto : 0));
  } else if (p->persist_backoff > 0 &&
             p->persist_backoff <= sizeof td_persist_backoff / sizeof td_persist_backoff[0]) {
    out->timer = TD_TIMER_PERSIST;
    out->timer_ms = td_left(p->persist_cnt, td_persist_backoff[p->persist_backoff - 1]);
  } else if (ip_get_option(p, SOF_KEEPALIVE) &&
             (p->state == ESTABLISHED || p->state == CLOSE_WAIT)) {
    out->timer = TD_TIMER_KEEPALIVE;
    uint32_t due_ms = p->keep_idle + p->keep_cnt_sent * p->keep_intvl;
    uint32_t held_ms = held * TCP_SLOW_INTERVAL;
    out->timer_ms = held_ms >= due_ms ? 0 : due_ms - held_ms;
  }
}

static void td_address(unsigned char *out, int *v6, const ip_addr_t *a) {
  memset(out, 0, 16);
  if (IP_IS_V6(a)) {
    *v6 = 1;
    memcpy(out, ip_2_ip6(a)->addr, 16);
  } else {
    memcpy(out, &ip_2_ip4(a)->addr, 4);
  }
}

static int td_fill(struct td_pcb *out, const struct tcp_pcb *p, int listening) {
  memset(out, 0, sizeof *out);
  out->id = (uintptr_t)p;
  out->state = p->state;
  td_address(out->local, &out->v6, &p->local_ip);
  out->local_port = p->local_port;
  /* A listener's remote address is never set: it stays unspecified. */
  if (!listening) {
    td_address(out->remote, &out->v6, &p->remote_ip);
    out->remote_port = p->remote_port;
    out->recv_queue = (uint32_t)(TCP_WND_MAX(p) - p->rcv_wnd);
    out->send_queue = p->snd_lbb - p->lastack;
    td_timer(out, p);
  }
  return 1;
}

/*
 * Copies up to `max` control blocks into `out`; returns how many there
 * are in all (more than `max` if some did not fit).
 */
int td_lwip_pcbs(struct td_pcb *out, int max) {
  int n = 0;
  LOCK_TCPIP_CORE();
  for (struct tcp_pcb_listen *l = tcp_listen_pcbs.listen_pcbs; l != NULL; l = l->next, n++) {
    if (n < max) {
      td_fill(&out[n], (const struct tcp_pcb *)l, 1);
      out[n].state = LISTEN;
    }
  }
  struct tcp_pcb *const lists[] = {tcp_bound_pcbs, tcp_active_pcbs, tcp_tw_pcbs};
  for (size_t i = 0; i < sizeof lists / sizeof lists[0]; i++) {
    for (struct tcp_pcb *p = lists[i]; p != NULL; p = p->next, n++) {
      if (n < max) {
        td_fill(&out[n], p, 0);
      }
    }
  }
  UNLOCK_TCPIP_CORE();
  return n;
}

/* The control block behind socket `fd` (see td_pcb.id), or 0 if it has
 * none (closed, or not TCP). */
uintptr_t td_lwip_socket_pcb(int fd) {
  uintptr_t id = 0;
  LOCK_TCPIP_CORE();
  struct lwip_sock *sock = lwip_socket_dbg_get_socket(fd);
  if (sock != NULL && sock->conn != NULL && NETCONNTYPE_GROUP(sock->conn->type) == NETCONN_TCP) {
    id = (uintptr_t)sock->conn->pcb.tcp;
  }
  UNLOCK_TCPIP_CORE();
  return id;
}
