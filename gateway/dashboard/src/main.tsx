import { options, render } from "preact";
import { App } from "./app";
import { startRouter } from "./lib/router";
import "./styles.css";

// One render per animation frame, however many updates arrive within it.
if (typeof requestAnimationFrame === "function") options.debounceRendering = (run) => requestAnimationFrame(run);

startRouter();
render(<App />, document.getElementById("app")!);
