// `moe serve`'s request parser and response bodies (launch/completion_api.h): every bad body is
// an ApiError with the right status and the offending key, never a crash.
#include <gtest/gtest.h>

#include <string>

#include "launch/completion_api.h"

namespace moe {
namespace {

using nlohmann::json;

ApiLimits limits() {
  ApiLimits l;
  l.max_tokens = 100;
  return l;
}

// The ApiError a body gets (status 0 and empty param if it parses).
ApiError refusal(const std::string& body) {
  try {
    parse_completion_request(body, limits());
  } catch (const ApiError& e) {
    return e;
  }
  return ApiError(0, "accepted");
}

TEST(CompletionApi, ParsesEveryField) {
  CompletionRequest r = parse_completion_request(
      R"({"prompt": "ROMEO:", "max_tokens": 7, "temperature": 0, "top_p": 0.5, "top_k": 3, "seed": 42,
          "stop": ["\n\n", "END"], "stream": true})", limits());
  EXPECT_EQ(r.prompt, "ROMEO:");
  EXPECT_EQ(r.sampling.max_tokens, 7);
  EXPECT_EQ(r.sampling.temperature, 0.0);
  EXPECT_EQ(r.sampling.top_p, 0.5);
  EXPECT_EQ(r.sampling.top_k, 3);
  EXPECT_EQ(r.sampling.seed, 42u);
  EXPECT_EQ(r.sampling.stop, (std::vector<std::string>{"\n\n", "END"}));
  EXPECT_TRUE(r.stream);
}

TEST(CompletionApi, DefaultsFollowOpenAI) {
  CompletionRequest r = parse_completion_request(R"({"prompt": ""})", limits());
  EXPECT_EQ(r.sampling.max_tokens, 16);
  EXPECT_EQ(r.sampling.temperature, 1.0);
  EXPECT_EQ(r.sampling.top_p, 1.0);
  EXPECT_EQ(r.sampling.top_k, 0);
  EXPECT_FALSE(r.stream);
  EXPECT_EQ(parse_completion_request(R"({"prompt": "a", "stop": "x"})", limits()).sampling.stop,
            std::vector<std::string>{"x"});
}

TEST(CompletionApi, AcceptsHarmlessStandardKeys) {
  EXPECT_NO_THROW(parse_completion_request(
      R"({"prompt": "a", "model": "gpt-x", "user": "u", "n": 1, "best_of": 1, "echo": false, "logprobs": null,
          "suffix": null, "presence_penalty": 0, "frequency_penalty": 0.0, "logit_bias": {}, "stream_options": {}})",
      limits()));
  // ... but not values the server would silently ignore.
  EXPECT_EQ(refusal(R"({"prompt": "a", "n": 2})").param, "n");
  EXPECT_EQ(refusal(R"({"prompt": "a", "echo": true})").param, "echo");
  EXPECT_EQ(refusal(R"({"prompt": "a", "presence_penalty": 0.5})").param, "presence_penalty");
}

TEST(CompletionApi, UnknownFieldIsNamed) {
  ApiError e = refusal(R"({"prompt": "a", "temprature": 0.5})");
  EXPECT_EQ(e.status, 400);
  EXPECT_EQ(e.param, "temprature");
  EXPECT_NE(std::string(e.what()).find("temprature: unknown field"), std::string::npos) << e.what();
}

TEST(CompletionApi, MalformedBodies) {
  for (const char* body : {"", "{", "{\"prompt\": }", "not json", "{\"prompt\": \"a\"} trailing", "\xff\xfe"}) {
    ApiError e = refusal(body);
    EXPECT_EQ(e.status, 400) << body;
    EXPECT_NE(std::string(e.what()).find("not valid JSON"), std::string::npos) << body << ": " << e.what();
  }
  EXPECT_EQ(refusal("[1, 2]").status, 400);
  EXPECT_NE(std::string(refusal("\"prompt\"").what()).find("must be a JSON object"), std::string::npos);
  EXPECT_EQ(refusal("{}").param, "prompt");
}

TEST(CompletionApi, WrongTypesAndValuesNameTheKey) {
  struct Case { const char* body; const char* param; };
  for (Case c : {Case{R"({"prompt": 5})", "prompt"}, Case{R"({"prompt": ["a"]})", "prompt"},
                 Case{R"({"prompt": "a", "max_tokens": "5"})", "max_tokens"},
                 Case{R"({"prompt": "a", "max_tokens": 2.5})", "max_tokens"},
                 Case{R"({"prompt": "a", "max_tokens": -1})", "max_tokens"},
                 Case{R"({"prompt": "a", "max_tokens": 101})", "max_tokens"},
                 Case{R"({"prompt": "a", "max_tokens": 18446744073709551615})", "max_tokens"},
                 Case{R"({"prompt": "a", "max_tokens": 1e300})", "max_tokens"},
                 Case{R"({"prompt": "a", "temperature": -0.1})", "temperature"},
                 Case{R"({"prompt": "a", "temperature": "hot"})", "temperature"},
                 Case{R"({"prompt": "a", "top_p": 0})", "top_p"}, Case{R"({"prompt": "a", "top_p": 1.5})", "top_p"},
                 Case{R"({"prompt": "a", "top_k": -3})", "top_k"}, Case{R"({"prompt": "a", "seed": -1})", "seed"},
                 Case{R"({"prompt": "a", "seed": "x"})", "seed"}, Case{R"({"prompt": "a", "stop": ""})", "stop"},
                 Case{R"({"prompt": "a", "stop": [1]})", "stop"}, Case{R"({"prompt": "a", "stop": {}})", "stop"},
                 Case{R"({"prompt": "a", "stream": "yes"})", "stream"}}) {
    ApiError e = refusal(c.body);
    EXPECT_EQ(e.status, 400) << c.body;
    EXPECT_EQ(e.param, c.param) << c.body << ": " << e.what();
  }
}

TEST(CompletionApi, NaNAndInfinityAreRefused) {
  for (const char* body : {R"({"prompt": "a", "temperature": NaN})", R"({"prompt": "a", "top_p": Infinity})",
                           R"({"prompt": "a", "temperature": -inf})",
                           R"({"prompt": "a", "temperature": 1e400})"})  // out of double's range
    EXPECT_EQ(refusal(body).status, 400) << body;
}

TEST(CompletionApi, DeepNestingIsRefusedBeforeParsing) {
  // A megabyte of brackets: refused by the depth scan, whatever the parser would do with it.
  std::string deep = R"({"prompt": "a", "x": )" + std::string(1 << 20, '[') + std::string(1 << 20, ']') + "}";
  ApiError e = refusal(deep);
  EXPECT_EQ(e.status, 400);
  EXPECT_NE(std::string(e.what()).find("nested deeper"), std::string::npos) << e.what();
  // Brackets inside strings do not count.
  EXPECT_EQ(refusal(R"({"prompt": ")" + std::string(1000, '[') + R"("})").status, 0);
}

TEST(CompletionApi, HugeStringsParse) {
  std::string body = R"({"prompt": ")" + std::string(1 << 20, 'a') + R"("})";
  EXPECT_EQ(parse_completion_request(body, limits()).prompt.size(), size_t(1) << 20);
}

TEST(CompletionApi, PromptMustFitTheContext) {
  auto tok = make_tokenizer("byte");
  EXPECT_EQ(check_prompt_fits("abcd", *tok, 10, 100, 32), 4);
  EXPECT_EQ(check_prompt_fits("", *tok, 10, 100, 32), 1);  // starts with EOS
  try {
    check_prompt_fits(std::string(40, 'a'), *tok, 0, 30, 100);
    FAIL();
  } catch (const ApiError& e) {
    EXPECT_EQ(e.param, "prompt");
  }
  try {
    check_prompt_fits("abcd", *tok, 29, 100, 32);
    FAIL();
  } catch (const ApiError& e) {
    EXPECT_EQ(e.param, "max_tokens");
    EXPECT_NE(std::string(e.what()).find("context of 32"), std::string::npos) << e.what();
  }
}

TEST(CompletionApi, ResponseBodies) {
  CompletionIds ids{"cmpl-1", 1700000000, "tiny"};
  json r = completion_response(ids, "hi", FinishReason::Eos, 3, 2);
  EXPECT_EQ(r["object"], "text_completion");
  EXPECT_EQ(r["choices"][0]["text"], "hi");
  EXPECT_EQ(r["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(r["usage"]["total_tokens"], 5);
  std::string ev = completion_chunk_event(ids, "x", FinishReason::None, 0, 0);
  ASSERT_EQ(ev.substr(0, 6), "data: ");
  ASSERT_EQ(ev.substr(ev.size() - 2), "\n\n");
  json chunk = json::parse(ev.substr(6));
  EXPECT_TRUE(chunk["choices"][0]["finish_reason"].is_null());
  EXPECT_FALSE(chunk.contains("usage"));
  json last = json::parse(completion_chunk_event(ids, "", FinishReason::Length, 3, 4).substr(6));
  EXPECT_EQ(last["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(last["usage"]["completion_tokens"], 4);
  json err = error_body(ApiError(413, "too big"));
  EXPECT_EQ(err["error"]["message"], "too big");
  EXPECT_TRUE(err["error"]["param"].is_null());
  // A byte tokenizer can cut a UTF-8 character: the dump replaces it rather than throwing.
  EXPECT_NO_THROW(dump_json(completion_response(ids, "\xc3", FinishReason::Length, 1, 1)));
}

TEST(CompletionApi, Utf8CompletePrefix) {
  EXPECT_EQ(utf8_complete_prefix("abc"), 3u);
  EXPECT_EQ(utf8_complete_prefix("ab\xc3"), 2u);              // first byte of é
  EXPECT_EQ(utf8_complete_prefix("ab\xc3\xa9"), 4u);          // é whole
  EXPECT_EQ(utf8_complete_prefix("a\xe2\x82"), 1u);           // 2 of €'s 3 bytes
  EXPECT_EQ(utf8_complete_prefix("a\xf0\x9f\x98"), 1u);       // 3 of 😀's 4 bytes
  EXPECT_EQ(utf8_complete_prefix("a\xf0\x9f\x98\x80"), 5u);
  EXPECT_EQ(utf8_complete_prefix(""), 0u);
  EXPECT_EQ(utf8_complete_prefix("\x80\x80\x80\x80"), 4u);    // not UTF-8 at all: nothing to wait for
}

}  // namespace
}  // namespace moe
