// The page's entry point: routes #/ (jobs list) and #/jobs/<id> (one job), and asks for an
// API token when the server wants one. The token lives in this tab's sessionStorage only.

import { checkToken, setToken, token, whenAuthRequired } from "/ui/api.js";
import { jobView } from "/ui/job.js";
import { jobsView } from "/ui/jobs.js";

const main = document.getElementById("view");
const prompt = document.getElementById("token-prompt");
const form = document.getElementById("token-form");
const input = document.getElementById("token-input");
const problem = document.getElementById("token-error");
const signOut = document.getElementById("sign-out");
let current = null;

function stopView() {
  if (current) current.stop();
  current = null;
  main.replaceChildren(); // no job data stays on the page
  delete main.dataset.loaded;
}

function route() {
  stopView();
  prompt.hidden = true;
  main.hidden = false;
  signOut.hidden = !token();
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, query = ""] = hash.split("?");
  const match = path.match(/^\/jobs\/([0-9a-f]{16})$/);
  main.dataset.view = match ? "job" : "jobs";
  current = match ? jobView(main, match[1]) : jobsView(main, new URLSearchParams(query));
}

/** Hide every piece of data and show the token form, with `message` if there is one. */
function askForToken(message) {
  stopView();
  main.hidden = true;
  signOut.hidden = true;
  prompt.hidden = false;
  problem.hidden = !message;
  problem.textContent = message || "";
  input.value = "";
  input.focus();
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const candidate = input.value.trim();
  if (!candidate) return;
  let accepted = false;
  try {
    accepted = await checkToken(candidate);
  } catch {
    problem.textContent = "The server could not be reached.";
    problem.hidden = false;
    return;
  }
  if (!accepted) {
    askForToken("The server did not accept that token.");
    return;
  }
  setToken(candidate);
  input.value = "";
  route();
});

signOut.addEventListener("click", () => {
  setToken(null);
  route(); // with tokens on, the first request brings the form back
});

whenAuthRequired((message) => askForToken(message));
window.addEventListener("hashchange", route);
route();
