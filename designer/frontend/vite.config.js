import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// Built into ../static, which the Python package serves and carries; relative asset URLs so
// the same build works at / (interlace designer) and at /designer/ (interlace run --designer).
export default defineConfig({
  plugins: [react()],
  base: "./",
  build: { outDir: "../static", emptyOutDir: true, chunkSizeWarningLimit: 2000, reportCompressedSize: false },
});
