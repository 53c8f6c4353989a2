// Fetches the product list through every hop and shows which origin answered.
document.addEventListener("DOMContentLoaded", async () => {
  const r = await fetch("/api/products");
  const data = await r.json();
  const p = document.createElement("p");
  p.textContent = `${data.products.length} products, answered by ${data.origin}`;
  document.querySelector("footer").appendChild(p);
});
