/**
 * The terminal interface of `duet chat` (ink): a title bar (room, peer, connection, key),
 * the history pane updating in real time, and the input line at the bottom. Keys: Enter
 * sends, PgUp/PgDn scroll, Ctrl-K shows the key, Ctrl-C quits; /help, /key, /accept-key,
 * /quit. Written with createElement rather than JSX, which would need a compiler setting
 * for every workspace member.
 *
 * @module
 */
// @ts-types="@types/react"
import React, { useEffect, useReducer, useRef, useState } from "react";
import { Box, render, Text, useApp, useCursor, useInput, useStdout } from "ink";
import chalk from "chalk";
import stringWidth from "string-width";
import type { ChatClient, ClientEvent } from "./client.ts";
import { textProblem } from "./crypto.ts";
import { type Command, readTypedLine, unknownCommandText } from "./commands.ts";
import {
  type Action,
  backspace,
  groupFingerprint,
  initialState,
  reduce,
  rowLines,
  type RowStyle,
  titleText,
  type TuiState,
} from "./tui_state.ts";

const h = React.createElement;

const HELP = "Enter sends · PgUp/PgDn scroll · Ctrl-K key · /key /accept-key /help /quit · " +
  "// starts a line that begins with / · Ctrl-C quits";

/**
 * How the screen starts receiving the client's events: called once with the screen's
 * listener, it hands over the events that came before and every later one.
 */
export type Subscribe = (listener: (event: ClientEvent) => void) => void;

interface AppProps {
  client: ChatClient;
  room: string;
  name: string;
  subscribe: Subscribe;
}

/** The parts of Node's tty.WriteStream we use (ink's types name it through @types/node). */
interface Terminal {
  columns?: number;
  rows?: number;
  on(event: "resize", listener: () => void): unknown;
  off(event: "resize", listener: () => void): unknown;
}

function useTerminalSize(): { columns: number; rows: number } {
  const stdout = useStdout().stdout as unknown as Terminal;
  const [size, setSize] = useState({ columns: stdout.columns ?? 80, rows: stdout.rows ?? 24 });
  useEffect(() => {
    const onResize = () => setSize({ columns: stdout.columns ?? 80, rows: stdout.rows ?? 24 });
    stdout.on("resize", onResize);
    return () => void stdout.off("resize", onResize);
  }, [stdout]);
  return size;
}

function App({ client, room, name, subscribe }: AppProps) {
  const [state, dispatch] = useReducer(reduce, initialState);
  const { exit } = useApp();
  const size = useTerminalSize();
  useEffect(() => subscribe((event) => dispatch({ type: "client", event })), []);
  const page = Math.max(1, size.rows - 4);
  const showKey = () => void showKeyNote(client, state.peer, dispatch);
  const commands = commandActions(client, dispatch, exit, showKey);
  const submit = (raw: string) => submitLine(raw, { client, dispatch, commands, page });
  useKeys({ dispatch, page, showKey, submit });
  // The terminal's own cursor sits at the end of the input line (the line is the last row).
  // Not an inverse-video block: with NO_COLOR or CI set, styles are dropped and such a
  // cursor vanishes; the real one also shows where an input method composes.
  const { setCursorPosition } = useCursor();
  setCursorPosition({
    x: Math.min(stringWidth(`> ${state.input}`), size.columns - 1),
    y: size.rows - 1,
  });
  return screen(state, { room, name, size, page });
}

type Dispatch = (action: Action) => void;

/** Notes the shared key's fingerprint, or that there is none yet. */
async function showKeyNote(
  client: ChatClient,
  peer: string | null,
  dispatch: Dispatch,
): Promise<void> {
  const hex = await client.fingerprint();
  dispatch({
    type: "note",
    text: !hex
      ? "No shared key yet: it is agreed when both of you have joined."
      : client.verified
      ? `Key SHA-256: ${groupFingerprint(hex)}. A code confirmed it with ` +
        `${peer ?? "your peer"}: nothing to compare.`
      : `Key SHA-256: ${groupFingerprint(hex)}. Read it to ${peer ?? "your peer"} by ` +
        "another channel: the same on both sides means nobody is in the middle.",
  });
}

/** What each slash command does. */
function commandActions(
  client: ChatClient,
  dispatch: Dispatch,
  exit: () => void,
  showKey: () => void,
): Record<Command, (argument?: string) => void> {
  return {
    "/quit": () => exit(),
    "/help": () => dispatch({ type: "note", text: HELP }),
    "/key": () => showKey(),
    "/accept-key": (argument) => {
      void client.acceptKey(argument || undefined).then((outcome) => {
        if (outcome.accepted) {
          dispatch({ type: "key-accepted" });
          dispatch({
            type: "note",
            text: `Accepted ${outcome.peer ?? "the peer"}'s key SHA-256 ` +
              `${groupFingerprint(outcome.fingerprint)}.` +
              (outcome.released ? ` ${outcome.released} held message(s) follow.` : ""),
          });
        } else {dispatch({
            type: "note",
            text: `Not accepted: ${outcome.problem}.`,
            tone: "warning",
          });}
      });
    },
  };
}

/** Acts on a typed line; false when it stays in the input line to be mended. */
function submitLine(
  raw: string,
  { client, dispatch, commands, page }: {
    client: ChatClient;
    dispatch: Dispatch;
    commands: Record<Command, (argument?: string) => void>;
    page: number;
  },
): boolean {
  const line = readTypedLine(raw);
  switch (line.kind) {
    case "empty":
      return true;
    case "command":
      commands[line.command](line.argument);
      return true;
    case "unknown":
      dispatch({ type: "note", text: unknownCommandText(line.word), tone: "warning" });
      return false;
    case "text": {
      const problem = textProblem(line.text);
      if (problem) {
        dispatch({ type: "note", text: `Not sent, ${problem}: shorten it or split it.` });
        return false;
      }
      dispatch({ type: "scroll", by: -Infinity, page });
      // Refused at once (the client stopped after a refusal): said, never queued.
      client.send(line.text).catch((error) =>
        dispatch({ type: "note", text: `${(error as Error).message}.`, tone: "warning" })
      );
      return true;
    }
  }
}

/** The keys: scrolling, Ctrl-K, Enter, editing the input line, pasted lines. */
function useKeys({ dispatch, page, showKey, submit }: {
  dispatch: Dispatch;
  page: number;
  showKey: () => void;
  submit: (raw: string) => boolean;
}): void {
  // The line being typed lives in a ref as well: keys that arrive before the next render
  // must build on each other, not on the last rendered state.
  const typed = useRef("");
  const setTyped = (value: string) => {
    typed.current = value;
    dispatch({ type: "input", value });
  };
  useInput((input, key) => {
    if (key.pageUp) return dispatch({ type: "scroll", by: page, page });
    if (key.pageDown) return dispatch({ type: "scroll", by: -page, page });
    if (key.ctrl && input === "k") return showKey();
    if (key.return) {
      if (submit(typed.current)) setTyped("");
      return;
    }
    if (key.backspace || key.delete) return setTyped(backspace(typed.current));
    if (key.ctrl || key.meta || key.escape || key.tab || key.upArrow || key.downArrow) return;
    // Pasted text (and tmux send-keys "text" Enter) arrives as one string: each line in it
    // is submitted as if typed, commands included.
    const parts = input.split(/\r\n|\r|\n/);
    if (parts.length > 1) {
      submit(typed.current + parts[0]);
      for (const line of parts.slice(1, -1)) submit(line);
      return setTyped(parts.at(-1) ?? "");
    }
    setTyped(typed.current + input);
  });
}

/** The screen: the title bar, the history pane, the "new below" marker, the input line. */
function screen(
  state: TuiState,
  { room, name, size, page }: {
    room: string;
    name: string;
    size: { columns: number; rows: number };
    page: number;
  },
) {
  const end = state.rows.length - state.scroll;
  const visible = state.rows.slice(Math.max(0, end - page), end);
  return h(
    Box,
    { flexDirection: "column", height: size.rows, width: size.columns },
    h(
      Box,
      { flexShrink: 0 },
      h(
        Text,
        { inverse: true, color: state.keyChanged ? "red" : undefined, wrap: "truncate-end" },
        titleText(state, room, size.columns),
      ),
    ),
    h(
      Box,
      { flexDirection: "column", flexGrow: 1, justifyContent: "flex-end", overflow: "hidden" },
      // Wrapped here, not by ink: see rowLines.
      ...visible.flatMap((row, i) =>
        rowLines(row, name, size.columns, colors).map((line, j) =>
          h(Box, { key: `${i}.${j}`, flexShrink: 0 }, h(Text, { wrap: "truncate-end" }, line))
        )
      ),
    ),
    state.unseen > 0
      ? h(
        Box,
        { flexShrink: 0 },
        h(Text, { color: "yellow" }, `── ${state.unseen} new below (PgDn) ──`),
      )
      : null,
    h(
      Box,
      {
        flexShrink: 0,
        borderStyle: "single",
        borderLeft: false,
        borderRight: false,
        borderBottom: false,
      },
      // The trailing space is where the cursor stands once the line is wider than the pane.
      h(Text, { wrap: "truncate-start" }, `> ${state.input} `),
    ),
  );
}

/** Colours for rowLines, by chalk, which drops them where ink drops its own (NO_COLOR). */
const colors: RowStyle = {
  time: (text) => chalk.gray(text),
  sender: (text, own) => chalk.bold[own ? "cyan" : "green"](text),
  mark: (text, failed) => (failed ? chalk.red : chalk.gray)(text),
  problem: (text) => chalk.red(text),
  note: (text, warning) => (warning ? chalk.red.bold : chalk.gray)(text),
};

/**
 * Runs the interface on the terminal (ink, the alternate screen) until the user quits;
 * resolves then. The caller has checked that stdin and stdout are terminals.
 *
 * @param client A started client for `room` as `name`.
 * @param subscribe See {@link Subscribe}.
 */
export async function runTui(
  client: ChatClient,
  room: string,
  name: string,
  subscribe: Subscribe,
): Promise<void> {
  const instance = render(h(App, { client, room, name, subscribe }), {
    alternateScreen: true, // otherwise old frames stay in the terminal's scrollback
    exitOnCtrlC: true,
    // The caller has checked for a terminal. Left to itself, ink turns non-interactive
    // whenever a CI variable is set (is-in-ci) and then draws nothing until exit: a
    // blank screen for a user whose shell has CI=true, and what failed our CI run.
    interactive: true,
  });
  await instance.waitUntilExit();
}
