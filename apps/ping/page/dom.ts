/**
 * The few DOM features the page uses, typed here. The page's code is checked with the
 * rest of the app under Deno's libraries (which have fetch, WebSocket, WebTransport and
 * `location`, but no `document`); adding lib "dom" to it would change the types of every
 * module checked with it (the WebSocket constructor, streams). Browsers have all of these.
 *
 * @module
 */

/** An element, as the page reads and writes it. */
export interface PageElement {
  textContent: string | null;
  hidden: boolean;
  readonly dataset: Record<string, string | undefined>;
  querySelector(selectors: string): PageElement | null;
}

/** What the chart draws with: a canvas's 2D context. */
export interface Canvas2D {
  font: string;
  fillStyle: string;
  strokeStyle: string;
  lineWidth: number;
  clearRect(x: number, y: number, w: number, h: number): void;
  fillRect(x: number, y: number, w: number, h: number): void;
  beginPath(): void;
  moveTo(x: number, y: number): void;
  lineTo(x: number, y: number): void;
  stroke(): void;
  fillText(text: string, x: number, y: number): void;
  measureText(text: string): { width: number };
}

/** The chart's canvas. */
export interface PageCanvas extends PageElement {
  readonly width: number;
  readonly height: number;
  getContext(kind: "2d"): Canvas2D | null;
}

/** The browser globals the page uses beyond Deno's. */
export interface PageGlobals {
  document: { getElementById(id: string): PageElement | null };
  requestAnimationFrame(callback: (time: number) => void): number;
}

/** The browser's globals, typed as {@link PageGlobals}. */
export const browser: PageGlobals = globalThis as unknown as PageGlobals;
