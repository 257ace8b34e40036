// Preloaded for `make sanitize` (the Makefile): dlclose does nothing, so the OpenMPI components that
// MPI_Finalize unloads stay mapped until exit and LeakSanitizer can name the library of each
// allocation they never freed (an unloaded one shows as "<unknown module>", which no suppression
// can match). Our code never calls dlclose; nothing else changes.
int dlclose(void* handle) {
  (void)handle;
  return 0;
}
