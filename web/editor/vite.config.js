import { defineConfig } from 'vite';
import react from '@vitejs/plugin-react';

// Built into web/dist, which `flowrun serve` serves. `npm run dev` proxies the API to a running server.
export default defineConfig({
  plugins: [react()],
  base: './',
  build: { outDir: '../dist', emptyOutDir: true, chunkSizeWarningLimit: 2000 },
  server: { proxy: { '/api': 'http://127.0.0.1:8188', '/ws': { target: 'ws://127.0.0.1:8188', ws: true } } },
});
