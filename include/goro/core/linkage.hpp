// goro/core/linkage.hpp — header-only (the default) or compiled once.
//
// Header-only: every function of the runtime is inline and defined in the
// headers. A program includes <goro/goro.hpp> and needs nothing else.
//
// Separate compilation: a program defines GORO_SEPARATE_COMPILATION in every
// translation unit (or compiles with -DGORO_SEPARATE_COMPILATION), and links
// the runtime compiled once: src/goro.cpp (meson: `goro_lib_dep`, or build
// it yourself). There, the headers declare the runtime's non-template
// functions and leave their bodies out, so a translation unit parses and
// compiles only the declarations and the templates it uses (channels, tasks,
// select). The translation unit that compiles the bodies defines
// GORO_IMPLEMENTATION before it includes <goro/goro.hpp>.
//
// A program uses one way throughout: a body compiled inline in one
// translation unit and out of line in another would be two definitions of one
// function.
//
// In a header, a non-template function that the runtime compiles once is
// declared, and then defined at the end of the header, in a section compiled
// only when GORO_BODIES is 1:
//
//     class timer_queue {
//         void add(timer_node* n);
//     };
//     #if GORO_BODIES
//     GORO_DECL void timer_queue::add(timer_node* n) { ... }
//     #endif
//
// A free function is declared with GORO_DECL too (`GORO_DECL void f();`),
// so that it is inline in header-only mode from its first declaration on.
// So is a virtual member function whose body moves (`GORO_DECL void f()
// override;`): declared without `inline`, it would be the class's key
// function, and every translation unit that includes the header would emit
// the class's vtable and everything it reaches, used or not (an unused
// include added 33 KB to a stripped binary before this rule).
// g++ rejects `[[gnu::noinline]]` after an inline declaration, so a noinline
// function is declared without GORO_DECL and defined `[[gnu::noinline]]
// GORO_DECL`, or stays where it is.
// Templates, constexpr functions and one-line accessors stay where they are.
#pragma once

#if defined(GORO_IMPLEMENTATION) && !defined(GORO_SEPARATE_COMPILATION)
#define GORO_SEPARATE_COMPILATION 1
#endif

#if defined(GORO_SEPARATE_COMPILATION)
#define GORO_DECL
#if defined(GORO_IMPLEMENTATION)
#define GORO_BODIES 1
#else
#define GORO_BODIES 0
#endif
#else
#define GORO_DECL inline
#define GORO_BODIES 1
#endif
