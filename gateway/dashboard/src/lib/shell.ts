// A command line split into words as a POSIX shell splits it (quotes and backslashes), so
// that `sh -c "tr a-z A-Z"` is three words. Nothing is expanded: no variables, globs or
// substitutions; the words go to the agent's program as they read.
import { ApiError } from "./gql";

const SPACE = /[ \t\n]/;
/** What a backslash keeps its meaning before, inside double quotes. */
const DOUBLE_ESCAPES = new Set(["$", "`", '"', "\\", "\n"]);

/** `sh -c "tr a-z A-Z"` → ["sh", "-c", "tr a-z A-Z"]; an unclosed quote is INVALID_INPUT. */
export function shellSplit(line: string): string[] {
  const words: string[] = [];
  let word = "";
  // A word exists once anything (even empty quotes) was read for it.
  let inWord = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (SPACE.test(c)) {
      if (inWord) words.push(word);
      word = "";
      inWord = false;
    } else if (c === "\\") {
      i++;
      if (i >= line.length) throw new ApiError("the command ends with a lone backslash", "INVALID_INPUT");
      // A backslash before a newline joins the lines.
      if (line[i] !== "\n") {
        word += line[i];
        inWord = true;
      }
    } else if (c === "'") {
      const end = line.indexOf("'", i + 1);
      if (end < 0) throw new ApiError("the command has an unclosed ' quote", "INVALID_INPUT");
      word += line.slice(i + 1, end);
      inWord = true;
      i = end;
    } else if (c === '"') {
      inWord = true;
      for (i++; ; i++) {
        if (i >= line.length) throw new ApiError('the command has an unclosed " quote', "INVALID_INPUT");
        const d = line[i];
        if (d === '"') break;
        if (d === "\\" && i + 1 < line.length && DOUBLE_ESCAPES.has(line[i + 1])) {
          i++;
          if (line[i] !== "\n") word += line[i];
        } else word += d;
      }
    } else {
      word += c;
      inWord = true;
    }
  }
  if (inWord) words.push(word);
  return words;
}
