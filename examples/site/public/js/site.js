document.addEventListener("DOMContentLoaded", () => {
  const p = document.createElement("p");
  p.textContent = "Loaded at " + new Date().toISOString() + " — script served by hopline.";
  document.body.appendChild(p);
});
