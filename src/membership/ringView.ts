import type { Logger } from '../log.js';
import type { RedisClient } from '../queue/redis.js';
import { HashRing } from '../ring/hashRing.js';
import type { MembershipRegistry } from './registry.js';

export type RingListener = (nodes: string[], previous: string[]) => void;

/**
 * A process's view of the ring: rebuilt when membership changes, learned from the membership
 * channel at once and from polling as a fallback (an expired node announces nothing).
 */
export class RingView {
  readonly ring: HashRing;
  private nodes: string[] = [];
  private timer: NodeJS.Timeout | undefined;
  private readonly listeners: RingListener[] = [];
  private closed = false;
  private refreshing: Promise<void> | undefined;

  constructor(
    private readonly registry: MembershipRegistry,
    private readonly subscriber: RedisClient,
    private readonly logger: Logger,
    opts: { vnodes?: number; pollMs?: number } = {},
  ) {
    this.ring = new HashRing(opts.vnodes !== undefined ? { vnodes: opts.vnodes } : {});
    this.pollMs = opts.pollMs ?? 1000;
  }

  private readonly pollMs: number;

  onChange(fn: RingListener): void {
    this.listeners.push(fn);
  }

  liveNodes(): string[] {
    return this.nodes;
  }

  ownerOf(key: string): string | undefined {
    return this.ring.getNode(key);
  }

  async start(): Promise<void> {
    await this.subscriber.subscribe(this.registry.channel);
    this.subscriber.on('message', (channel: string) => {
      if (channel === this.registry.channel) void this.refresh();
    });
    await this.refresh();
    this.timer = setInterval(() => void this.refresh(), this.pollMs);
    this.timer.unref();
  }

  /** Re-read the live set; calls listeners when it changed. Concurrent calls share one read. */
  refresh(): Promise<void> {
    this.refreshing ??= this.doRefresh().finally(() => {
      this.refreshing = undefined;
    });
    return this.refreshing;
  }

  private async doRefresh(): Promise<void> {
    if (this.closed) return;
    let live: string[];
    try {
      live = await this.registry.live();
    } catch (err) {
      this.logger.warn({ err }, 'could not read ring membership');
      return;
    }
    if (live.length === this.nodes.length && live.every((n, i) => n === this.nodes[i])) return;
    const previous = this.nodes;
    this.nodes = live;
    this.ring.rebuild(live);
    this.logger.info({ nodes: live, previous }, 'ring membership changed');
    for (const fn of this.listeners) fn(live, previous);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    await this.subscriber.unsubscribe().catch(() => {});
  }
}
