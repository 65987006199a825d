// Actions a lower module must start but a higher one owns; main.js binds them so imports only point down.

export const hooks = {
  // The key stopped working while signed in (signin.js).
  signOut: (_message) => {},
  // A filter changed: new URL, chips and list (list.js).
  filtersChanged: () => {},
  // Load the list again from its first page (list.js).
  reload: () => {},
};
