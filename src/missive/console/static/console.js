// The console's small progressive bits: copy buttons, confirmations. Every page works without them.
document.addEventListener("click", (event) => {
  const copy = event.target.closest("[data-copy]");
  if (copy) {
    event.preventDefault();
    const text = document.querySelector(copy.dataset.copy).textContent;
    navigator.clipboard?.writeText(text).then(() => { copy.textContent = "Copied"; setTimeout(() => (copy.textContent = "Copy"), 1500); });
  }
  const confirmer = event.target.closest("[data-confirm]");
  if (confirmer && !window.confirm(confirmer.dataset.confirm)) event.preventDefault();
});
window.missiveCsrf = () => document.querySelector('meta[name="csrf-token"]')?.content || "";
