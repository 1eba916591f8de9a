/**
 * Coalescing wake-up signal (TiDB's Notifier): any number of wake() calls while the consumer
 * is busy collapse into one pending wake-up, so a burst of DDL causes one extra pass, not N.
 */
export class Notifier {
  private pending = false;
  private resolve: (() => void) | undefined;

  wake(): void {
    this.pending = true;
    const r = this.resolve;
    this.resolve = undefined;
    r?.();
  }

  /** Resolve when woken (true) or after timeoutMs (false); consumes the pending wake-up. */
  async wait(timeoutMs: number): Promise<boolean> {
    if (!this.pending) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          this.resolve = undefined;
          resolve();
        }, timeoutMs);
        this.resolve = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    const woken = this.pending;
    this.pending = false;
    return woken;
  }
}
